//! Secrets: browse an environment's paths, and one secret's metadata, version history and
//! rotation. Values are never on these pages unless revealed: revealing is a POST (so no
//! link, prefetch or history entry does it) that needs the read capability and is audited.

use chrono::{DateTime, Utc};
use maud::{html, Markup};
use steward_rotation::RotationStatus;
use steward_secrets::SecretMetadata;

use crate::{
    layout::{csrf_field, page},
    span, when, Section, Shell,
};

/// The browse page.
pub struct BrowsePage<'a> {
    pub envs: &'a [String],
    pub env: &'a str,
    pub prefix: &'a str,
    pub keys: &'a Section<(Vec<String>, bool)>,
}

/// Each folder of `prefix` with the prefix that lists it: `a/b/` gives (a, a/), (b, a/b/).
fn folders(prefix: &str) -> Vec<(&str, String)> {
    let mut acc = String::new();
    prefix
        .split('/')
        .filter(|p| !p.is_empty())
        .map(|part| {
            acc.push_str(part);
            acc.push('/');
            (part, acc.clone())
        })
        .collect()
}

fn crumbs(env: &str, prefix: &str) -> Markup {
    html! {
        nav aria-label="Breadcrumb" {
            a href=(format!("/ui/secrets?env={env}")) { (env) } " / "
            @for (part, up_to) in folders(prefix) {
                a href=(format!("/ui/secrets?env={env}&prefix={up_to}")) { (part) } " / "
            }
        }
    }
}

/// The list of keys under a prefix.
pub fn browse(shell: &Shell, p: &BrowsePage) -> Markup {
    page(
        shell,
        html! {
            h1 { "Secrets" }
            nav aria-label="Environments" {
                ul.envs {
                    @for e in p.envs {
                        li { a href=(format!("/ui/secrets?env={e}")) aria-current=[(e == p.env).then_some("page")] { (e) } " " }
                    }
                }
            }
            (crumbs(p.env, p.prefix))
            @match p.keys {
                Ok((keys, truncated)) => {
                    @if keys.is_empty() { p.muted { "Nothing here yet (or nothing your token may list)." } }
                    @else {
                        ul {
                            @for k in keys {
                                li {
                                    @if k.ends_with('/') {
                                        a href=(format!("/ui/secrets?env={}&prefix={}{}", p.env, p.prefix, k)) { (k) }
                                    } @else {
                                        a href=(format!("/ui/secrets/{}/{}{}", p.env, p.prefix, k)) { (k) }
                                    }
                                }
                            }
                        }
                        @if *truncated { p.muted { "The list is cut short; narrow it with a deeper folder." } }
                    }
                }
                Err(e) => p.muted { "This list is not shown: " (e) },
            }
        },
    )
}

/// A revealed value, shown once on the secret's page.
pub struct Revealed {
    pub version: u64,
    /// Pretty-printed JSON of the version's fields.
    pub text: String,
}

/// One secret's page.
pub struct SecretPage<'a> {
    pub now: DateTime<Utc>,
    pub env: &'a str,
    pub path: &'a str,
    pub meta: &'a SecretMetadata,
    pub rotation: Option<&'a RotationStatus>,
    pub revealed: Option<&'a Revealed>,
    pub csrf: &'a str,
}

/// The secret's page.
pub fn show(shell: &Shell, p: &SecretPage) -> Markup {
    let m = p.meta;
    let parent = p.path.rsplit_once('/').map_or("", |(dir, _)| dir);
    let parent = if parent.is_empty() {
        String::new()
    } else {
        format!("{parent}/")
    };
    page(
        shell,
        html! {
            (crumbs(p.env, &parent))
            h1 { "Secret " code { (p.env) "/" (p.path) } }
            dl.facts {
                @if !m.meta.description.is_empty() { dt { "Description" } dd { (m.meta.description) } }
                @if !m.meta.owner.is_empty() { dt { "Owner" } dd { (m.meta.owner) } }
                @if !m.meta.tags.is_empty() { dt { "Tags" } dd { (m.meta.tags.join(", ")) } }
                dt { "Current version" } dd { (m.current_version) }
                dt { "Created" } dd { (when(m.created_time)) }
                dt { "Updated" } dd { (when(m.updated_time)) " (" (span((p.now - m.updated_time).num_seconds())) " ago)" }
                @if let Some(e) = m.meta.expires_at {
                    dt { "Expires" } dd.bad[e <= p.now] { (when(e)) @if e <= p.now { " (expired)" } @else { " (in " (span((e - p.now).num_seconds())) ")" } }
                }
                dt { "Versions kept" } dd { @if m.max_versions == 0 { "all" } @else { (m.max_versions) } }
                @for (k, v) in &m.meta.custom { dt { (k) } dd { (v) } }
            }

            @if let Some(r) = p.revealed {
                section aria-labelledby="h-value" {
                    h2 #h-value { "Value of version " (r.version) }
                    p.flash.bad role="status" { "This reveal was recorded in the audit log under your name. The value hides again after a minute; do not leave it on screen." }
                    pre.secret-value data-reveal-expires="60" { (r.text) }
                }
            }

            @if let Some(r) = p.rotation {
                h2 { "Rotation" }
                dl.facts {
                    dt { "Rotator" } dd { (r.rotator) }
                    dt { "State" } dd { (r.state) @if let Some(s) = r.step { " (" (s) ")" } }
                    @if let Some(t) = r.last_rotated_at { dt { "Last rotated" } dd { (when(t)) } }
                    @if let Some(t) = r.next_due { dt { "Next due" } dd { (when(t)) } }
                    dt { "Rotations / failures" } dd { (r.rotations) " / " (r.failures) }
                    @if let Some(e) = &r.last_error { dt { "Last error" } dd.bad { (e) } }
                }
            }

            h2 { "History" }
            div.table-wrap { table {
                thead { tr { th.num { "Version" } th { "Created" } th { "State" } th { span.muted { "Action" } } } }
                tbody {
                    @for v in m.versions.iter().rev() {
                        tr {
                            td.num { (v.version) @if v.version == m.current_version { " (current)" } }
                            td { (when(v.created_time)) }
                            td {
                                @if v.destroyed { "destroyed" }
                                @else if let Some(d) = v.deletion_time { @if d <= p.now { "deleted " (when(d)) } @else { "deletes " (when(d)) } }
                                @else { "live" }
                            }
                            td {
                                @if !v.destroyed && v.deletion_time.is_none_or(|d| d > p.now) {
                                    form method="post" action=(format!("/ui/secrets/{}/{}", p.env, p.path)) data-confirm="Reveal this value? The reveal is audited." {
                                        (csrf_field(p.csrf))
                                        input type="hidden" name="version" value=(v.version);
                                        button.secondary type="submit" aria-label=(format!("Reveal version {}", v.version)) { "Reveal" }
                                    }
                                }
                            }
                        }
                    }
                }
            } }
        },
    )
}
