//! The sign-in page: a token goes in once; the browser then holds only a session cookie.

use maud::{html, Markup};

use crate::layout::{page, Flash, Nav, Shell};

/// The form, with an error when the last attempt failed; `next` is where to go afterwards.
pub fn render(error: Option<&str>, next: &str) -> Markup {
    let shell = Shell {
        title: "Sign in",
        nav: Nav::None,
        actor: None,
        csrf: None,
        flash: error.map(|e| Flash {
            ok: false,
            text: e.to_string(),
        }),
    };
    page(
        &shell,
        html! {
            div.signin {
                h1 { "Sign in to Steward" }
                form.stack method="post" action="/ui/sign-in" {
                    input type="hidden" name="next" value=(next);
                    div {
                        label for="token" {
                            "Token"
                            span.hint { "A Steward token, e.g. from " code { "steward token create" } ". It stays in the server's memory for this session; your browser keeps only a random session cookie." }
                        }
                        input #token type="password" name="token" required autocomplete="off" autofocus spellcheck="false";
                    }
                    div { button type="submit" { "Sign in" } }
                }
            }
        },
    )
}
