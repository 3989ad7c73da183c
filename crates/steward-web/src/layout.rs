//! The page frame every signed-in page shares: skip link, navigation, who is signed in with a
//! sign-out button, an optional flash message, and the shortcut help.

use maud::{html, Markup, DOCTYPE};

/// Which navigation entry is current.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    None,
    Overview,
    Checks,
    Alerts,
    Secrets,
    Backups,
    Audit,
}

const ENTRIES: &[(Nav, &str, &str, &str)] = &[
    (Nav::Overview, "/ui/", "Overview", "g o"),
    (Nav::Checks, "/ui/checks", "Checks", "g c"),
    (Nav::Alerts, "/ui/alerts", "Alerts", "g a"),
    (Nav::Secrets, "/ui/secrets", "Secrets", "g s"),
    (Nav::Backups, "/ui/backups", "Backups", "g b"),
    (Nav::Audit, "/ui/audit", "Audit log", "g l"),
];

/// A one-line message above the page body, e.g. after a form was submitted.
#[derive(Debug, Clone)]
pub struct Flash {
    pub ok: bool,
    pub text: String,
}

/// The frame's inputs.
#[derive(Debug, Clone)]
pub struct Shell<'a> {
    pub title: &'a str,
    pub nav: Nav,
    /// The signed-in token's display name; `None` on the sign-in page.
    pub actor: Option<&'a str>,
    /// The session's CSRF token, for the sign-out form.
    pub csrf: Option<&'a str>,
    pub flash: Option<Flash>,
}

/// The hidden CSRF field every state-changing form carries.
pub fn csrf_field(csrf: &str) -> Markup {
    html! { input type="hidden" name="csrf" value=(csrf); }
}

/// The whole page around `body`.
pub fn page(shell: &Shell, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="referrer" content="same-origin";
                title { (shell.title) " · Steward" }
                link rel="stylesheet" href="/ui/static/app.css";
                script src="/ui/static/app.js" defer {}
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    div.bar {
                        a.brand href="/ui/" { "Steward" }
                        @if shell.actor.is_some() {
                            nav aria-label="Main" {
                                ul {
                                    @for (nav, href, label, _) in ENTRIES {
                                        li { a href=(href) aria-current=[(shell.nav == *nav).then_some("page")] { (label) } }
                                    }
                                }
                            }
                        }
                        @if let (Some(actor), Some(csrf)) = (shell.actor, shell.csrf) {
                            div.who {
                                span { "Signed in as " strong { (actor) } }
                                form method="post" action="/ui/sign-out" {
                                    (csrf_field(csrf))
                                    button type="submit" { "Sign out" }
                                }
                            }
                        }
                    }
                }
                main #main tabindex="-1" {
                    @if let Some(f) = &shell.flash {
                        p.flash.ok[f.ok].bad[!f.ok] role=(if f.ok { "status" } else { "alert" }) { (f.text) }
                    }
                    (body)
                    @if shell.actor.is_some() {
                        details #shortcuts {
                            summary { "Keyboard shortcuts" }
                            ul {
                                @for (_, _, label, keys) in ENTRIES {
                                    li { kbd { (keys) } " " (label) }
                                }
                                li { kbd { "/" } " focus the filter" }
                                li { kbd { "?" } " show or hide this list" }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// A page that says what went wrong, inside the frame.
pub fn error_page(shell: &Shell, heading: &str, message: &str) -> Markup {
    page(
        shell,
        html! {
            h1 { (heading) }
            p role="alert" { (message) }
            p { a href="/ui/" { "Back to the overview" } }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_current_entry_is_marked_and_values_are_escaped() {
        let html = page(
            &Shell {
                title: "Checks",
                nav: Nav::Checks,
                actor: Some("<b>ops</b>"),
                csrf: Some("c\"srf"),
                flash: Some(Flash {
                    ok: false,
                    text: "<script>".into(),
                }),
            },
            html! { h1 { "Checks" } },
        )
        .into_string();
        assert!(html.contains(r#"<a href="/ui/checks" aria-current="page">Checks</a>"#));
        assert_eq!(html.matches("aria-current").count(), 1);
        assert!(html.contains("&lt;b&gt;ops&lt;/b&gt;") && !html.contains("<b>ops"));
        assert!(html.contains("&lt;script&gt;") && html.contains(r#"value="c&quot;srf""#));
        assert!(html.contains(r#"role="alert""#));
    }

    #[test]
    fn the_sign_in_frame_has_no_navigation() {
        let html = page(
            &Shell {
                title: "Sign in",
                nav: Nav::None,
                actor: None,
                csrf: None,
                flash: None,
            },
            html! {},
        )
        .into_string();
        assert!(!html.contains("<nav"));
        assert!(!html.contains("Sign out"));
    }
}
