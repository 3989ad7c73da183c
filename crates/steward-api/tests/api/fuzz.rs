//! Fuzzing request decoding with proptest: arbitrary bytes (and JSON built from the API's own
//! field names, and JSON with a few bytes changed) as request bodies, and arbitrary path
//! segments and queries in URIs. Whatever comes in, the server must not panic, must not answer
//! 5xx, and every non-2xx answer must have the one error shape.
//!
//! Failing cases are kept in `fuzz.regressions` next to this file (replayed first on every
//! run), and `tests/corpus/` holds hand-picked tricky inputs that [`corpus_replays_cleanly`]
//! replays.

use std::{
    path::Path,
    sync::{LazyLock, Mutex},
};

use axum::{
    body::Body,
    http::{Method, Request},
};
use proptest::{
    prelude::*,
    test_runner::{Config, FileFailurePersistence, TestCaseError, TestRunner},
};
use serde_json::{json, Map, Value};

use crate::harness::{encode_uri, error_shape_problem, exempt_from_shape, Api, Resp};

/// Cases per fuzz test; `STEWARD_FUZZ_CASES` overrides it for a longer hunt.
const CASES: u32 = 256;

/// One request as the fuzzers and the corpus describe it.
#[derive(Debug, Clone)]
struct Req {
    method: String,
    uri: String,
    who: Who,
    body: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    Root,
    /// A renewable token with a TTL and broad (non-admin) rights.
    User,
    Nobody,
}

static USER_TOKEN: LazyLock<Value> = LazyLock::new(|| json!({"policies": ["all"], "ttl": "1h"}));

/// A server prepared for fuzzing, reused by every case of one test.
struct Bench {
    rt: tokio::runtime::Runtime,
    api: Api,
    /// The `User` token; replaced when a case ends it (`renew-self` with increment 0 does).
    user: Mutex<String>,
}

impl Bench {
    fn new() -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let (api, user) = rt.block_on(async {
            let api = Api::new().await;
            let all = json!({"rules": [{"env": "*", "path": "**", "capabilities": ["read", "list", "write", "delete"]}]});
            api.expect(204, "PUT", "/v1/sys/policies/all", api.root(), Some(all))
                .await;
            let (user, _) = api.token(USER_TOKEN.clone()).await;
            api.put("secret/data/corpus/existing", json!({"k": "v"})).await;
            api.expect(
                200,
                "PUT",
                "/v1/secret/data/corpus/loop",
                api.root(),
                Some(json!({"value": "${secret:dev/corpus/loop}"})),
            )
            .await;
            (api, user)
        });
        Self {
            rt,
            api,
            user: Mutex::new(user),
        }
    }

    /// Sends `req`; `Err` describes a broken rule.
    fn run(&self, req: &Req) -> Result<Resp, String> {
        let user = self.user.lock().unwrap().clone();
        let token = match req.who {
            Who::Root => Some(self.api.root.as_str()),
            Who::User => Some(user.as_str()),
            Who::Nobody => None,
        };
        let mut b = Request::builder()
            .method(Method::from_bytes(req.method.as_bytes()).map_err(|e| e.to_string())?)
            .uri(req.uri.as_str());
        if let Some(t) = token {
            b = b.header("x-vault-token", t);
        }
        let http_req = b
            .body(Body::from(req.body.clone()))
            .map_err(|e| format!("test bug: unbuildable request {req:?}: {e}"))?;
        let path = http_req.uri().path().to_string();
        let r = self.rt.block_on(self.api.send_unchecked(http_req));
        if req.who == Who::User && matches!(r.code(), "token_expired" | "token_revoked") {
            let fresh = self.rt.block_on(self.api.token(USER_TOKEN.clone()));
            *self.user.lock().unwrap() = fresh.0;
        }
        // Only the probes may answer 5xx (health's `sealedcode` and friends, `/readyz`).
        let probe = matches!(path.as_str(), "/v1/sys/health" | "/readyz");
        if r.status.is_server_error() && !probe {
            return Err(format!("answered {}: {}", r.status, r.text));
        }
        if r.request_id().is_empty() {
            return Err("no X-Request-Id".into());
        }
        if !r.status.is_success() && !exempt_from_shape(&req.method, &path, &r) {
            if let Some(p) = error_shape_problem(&r) {
                return Err(format!("{p}: {} {}", r.status, r.text));
            }
        }
        Ok(r)
    }

    fn fuzz<S: Strategy>(&self, strategy: S, make: impl Fn(S::Value) -> Req) {
        let mut runner = TestRunner::new(Config {
            cases: std::env::var("STEWARD_FUZZ_CASES")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(CASES),
            failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("regressions"))),
            source_file: Some(file!()),
            max_shrink_iters: 512,
            ..Config::default()
        });
        let seen = Mutex::new(std::collections::BTreeMap::<String, u32>::new());
        let result = runner.run(&strategy, |v| {
            let req = make(v);
            if dangerous(&req) {
                return Ok(());
            }
            let r = self
                .run(&req)
                .map_err(|e| TestCaseError::fail(format!("{} {}: {e}", req.method, req.uri)))?;
            let outcome = format!("{} {}", r.status.as_u16(), r.code());
            *seen.lock().unwrap().entry(outcome).or_default() += 1;
            Ok(())
        });
        if let Err(e) = result {
            panic!("{e}");
        }
        // The fuzzer must get past decoding: some requests succeed, and the failures vary.
        let seen = seen.into_inner().unwrap();
        eprintln!("answers: {seen:?}");
        assert!(
            seen.keys().any(|k| k.starts_with('2')),
            "no request succeeded: {seen:?}"
        );
        assert!(seen.len() >= 3, "too few kinds of answer: {seen:?}");
        // The server is still healthy, and the audit chain intact.
        self.rt.block_on(async {
            let v = self
                .api
                .expect(200, "POST", "/v1/sys/audit/verify", self.api.root(), None)
                .await;
            assert_eq!(v["data"]["ok"], true, "{v}");
        });
    }
}

/// Requests that would end the fuzzing session (seal the server, revoke or rotate). The router
/// matches raw (still percent-encoded) paths, so the raw URI is what counts.
fn dangerous(req: &Req) -> bool {
    let path = req
        .uri
        .split('?')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    path.replace("seal-status", "").contains("seal")
        || path.contains("revoke")
        || path.contains("rotate")
}

/// Field names the API knows, for the stray fields of generated bodies.
const KEYS: &[&str] = &[
    "data",
    "value",
    "options",
    "cas",
    "metadata",
    "max_versions",
    "cas_required",
    "custom_metadata",
    "custom",
    "description",
    "owner",
    "tags",
    "expires_at",
    "versions",
    "version",
    "policies",
    "ttl",
    "max_ttl",
    "explicit_max_ttl",
    "display_name",
    "renewable",
    "no_default_policy",
    "meta",
    "rules",
    "env",
    "path",
    "capabilities",
    "increment",
    "accessor",
    "key",
    "reset",
    "input",
    "template",
];
/// Strings that mean something somewhere in the API.
const WORDS: &[&str] = &[
    "",
    "read",
    "write",
    "list",
    "delete",
    "admin",
    "deny",
    "rotate",
    "*",
    "**",
    "[",
    "{a,b}",
    "dev",
    "prod",
    "sys",
    "root",
    "all",
    "x",
    "Bad",
    "1h",
    "0",
    "0s",
    "90s",
    "7d",
    "1h30m",
    "-1",
    "1y",
    "h",
    " 1h",
    "99999999999999",
    "18446744073709551615",
    "18446744073709551616",
    "99999999999999d",
    "2026-01-01T00:00:00Z",
    "+262142-01-01T00:00:00Z",
    "not a date",
    "${secret:dev/corpus/existing}",
    "${secret:dev/corpus/existing#k}",
    "${secret:dev/corpus/loop}",
    "${secret:",
    "${secret:prod/nothing}",
    "${secret:../x}",
    "../x",
    "a/b",
    "a/**/b",
    "\u{0}",
    "\u{feff}",
    "é",
    "stw.",
    "acc.",
    "acc.000000000000000000000000",
];
const NUMBERS: &[u64] = &[
    0,
    1,
    2,
    3,
    5,
    100,
    4096,
    u64::MAX,
    i64::MAX as u64,
    i64::MAX as u64 + 1,
];

type S = BoxedStrategy<Value>;

fn word() -> S {
    prop_oneof![
        4 => prop::sample::select(WORDS).prop_map(Value::from),
        1 => any::<String>().prop_map(Value::from),
        1 => (1usize..6000).prop_map(|n| Value::from("w".repeat(n))),
    ]
    .boxed()
}

fn number() -> S {
    prop_oneof![
        4 => prop::sample::select(NUMBERS).prop_map(Value::from),
        1 => any::<u64>().prop_map(Value::from),
        1 => any::<i64>().prop_map(Value::from),
        1 => prop::sample::select(vec![-1.0, 1.5, 1e300, -0.0]).prop_map(|f: f64| json!(f)),
    ]
    .boxed()
}

fn boolean() -> S {
    any::<bool>().prop_map(Value::Bool).boxed()
}

fn arb_json() -> S {
    let leaf = prop_oneof![
        Just(Value::Null),
        boolean(),
        number(),
        any::<f64>().prop_map(|f| json!(f)),
        word(),
    ];
    leaf.prop_recursive(5, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec(
                (
                    prop_oneof![
                        4 => prop::sample::select(KEYS).prop_map(str::to_string),
                        1 => any::<String>()
                    ],
                    inner
                ),
                0..6
            )
            .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
    .boxed()
}

/// Mostly `right`, sometimes anything at all (a wrong type).
fn ish(right: S) -> S {
    prop_oneof![9 => right, 1 => arb_json()].boxed()
}

fn array(item: S, max: usize) -> S {
    prop::collection::vec(item, 0..max)
        .prop_map(Value::Array)
        .boxed()
}

/// An object with a random subset of `fields` (each value mostly of the right type), and
/// now and then a stray field.
fn obj(fields: Vec<(&'static str, S)>) -> S {
    let parts: Vec<BoxedStrategy<Option<(String, Value)>>> = fields
        .into_iter()
        .map(|(k, v)| {
            prop::option::weighted(0.6, ish(v).prop_map(move |v| (k.to_string(), v))).boxed()
        })
        .collect();
    let stray = prop::option::weighted(
        0.05,
        (
            prop::sample::select(KEYS).prop_map(str::to_string),
            arb_json(),
        ),
    );
    (parts, stray)
        .prop_map(|(parts, stray)| {
            Value::Object(parts.into_iter().flatten().chain(stray).collect())
        })
        .boxed()
}

fn string_map() -> S {
    prop::collection::btree_map(any::<String>(), word(), 0..4)
        .prop_map(|m| json!(m))
        .boxed()
}

fn metadata_body() -> S {
    obj(vec![
        ("description", word()),
        ("owner", word()),
        ("tags", array(word(), 5)),
        ("expires_at", prop_oneof![word(), Just(Value::Null)].boxed()),
        ("custom_metadata", string_map()),
        ("max_versions", number()),
        ("cas_required", boolean()),
    ])
}

fn kv_write_body() -> S {
    obj(vec![
        (
            "data",
            prop::collection::btree_map(any::<String>(), arb_json(), 0..4)
                .prop_map(|m| json!(m))
                .boxed(),
        ),
        ("value", prop_oneof![word(), arb_json()].boxed()),
        ("options", obj(vec![("cas", number())])),
        ("metadata", metadata_body()),
    ])
}

fn policy_body() -> S {
    let caps = prop::sample::select(vec![
        "read", "list", "write", "delete", "rotate", "admin", "deny", "fly",
    ])
    .prop_map(Value::from)
    .boxed();
    obj(vec![
        ("description", word()),
        (
            "rules",
            array(
                obj(vec![
                    ("env", word()),
                    ("path", word()),
                    ("capabilities", array(caps, 4)),
                ]),
                4,
            ),
        ),
    ])
}

fn token_body() -> S {
    obj(vec![
        ("policies", array(word(), 3)),
        ("ttl", word()),
        // One of the two names of this field (both at once is a duplicate).
        ("max_ttl", word()),
        ("display_name", word()),
        ("renewable", boolean()),
        ("no_default_policy", boolean()),
        (
            "meta",
            prop_oneof![Just(Value::Null), Just(json!({})), string_map()].boxed(),
        ),
    ])
}

/// Bodies: mostly JSON shaped like `schema`, some with a few bytes changed, some raw bytes.
fn body(schema: S) -> BoxedStrategy<Vec<u8>> {
    let edited = (
        schema.clone(),
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    )
        .prop_map(|(v, edits)| {
            let mut b = v.to_string().into_bytes();
            for (i, byte) in edits {
                let at = i.index(b.len());
                b[at] = byte;
            }
            b
        });
    prop_oneof![
        6 => schema.prop_map(|v| v.to_string().into_bytes()),
        1 => edited,
        1 => prop::collection::vec(any::<u8>(), 0..400),
        1 => arb_json().prop_map(|v| v.to_string().into_bytes()),
    ]
    .boxed()
}

fn target(method: &'static str, uri: &'static str, who: Who, schema: S) -> BoxedStrategy<Req> {
    body(schema)
        .prop_map(move |body| Req {
            method: method.into(),
            uri: uri.into(),
            who,
            body,
        })
        .boxed()
}

#[test]
fn fuzz_kv_write_bodies() {
    let bench = Bench::new();
    bench.fuzz(
        prop_oneof![
            target(
                "PUT",
                "/v1/secret/data/fuzz/body",
                Who::Root,
                kv_write_body()
            ),
            target(
                "POST",
                "/v1/prod/data/fuzz/body",
                Who::User,
                kv_write_body()
            ),
        ],
        |r| r,
    );
}

#[test]
fn fuzz_policy_bodies() {
    let bench = Bench::new();
    bench.fuzz(
        target("POST", "/v1/sys/policies/x", Who::Root, policy_body()),
        |r| r,
    );
}

#[test]
fn fuzz_token_create_bodies() {
    let bench = Bench::new();
    bench.fuzz(
        prop_oneof![
            target("POST", "/v1/auth/token/create", Who::Root, token_body()),
            target("POST", "/v1/auth/token/create", Who::User, token_body()),
        ],
        |r| r,
    );
}

/// The other routes that decode a body.
#[test]
fn fuzz_other_bodies() {
    let bench = Bench::new();
    let versions = || obj(vec![("versions", array(number(), 4))]);
    bench.fuzz(
        prop_oneof![
            target(
                "POST",
                "/v1/secret/metadata/fuzz/meta",
                Who::Root,
                metadata_body()
            ),
            target(
                "POST",
                "/v1/secret/delete/corpus/existing",
                Who::User,
                versions()
            ),
            target(
                "POST",
                "/v1/secret/undelete/corpus/existing",
                Who::User,
                versions()
            ),
            target(
                "POST",
                "/v1/secret/destroy/fuzz/nothing",
                Who::User,
                versions()
            ),
            target(
                "POST",
                "/v1/secret/rollback/corpus/existing",
                Who::User,
                obj(vec![("version", number())])
            ),
            target(
                "POST",
                "/v1/auth/token/renew-self",
                Who::User,
                obj(vec![("increment", prop_oneof![word(), number()].boxed())])
            ),
            target(
                "POST",
                "/v1/auth/token/lookup-accessor",
                Who::Root,
                obj(vec![("accessor", word())])
            ),
            target(
                "POST",
                "/v1/sys/unseal",
                Who::Nobody,
                obj(vec![("key", word()), ("reset", boolean())])
            ),
            target(
                "POST",
                "/v1/sys/audit-hash",
                Who::Root,
                obj(vec![("input", word())])
            ),
            target(
                "POST",
                "/v1/sys/template/render",
                Who::User,
                obj(vec![("template", word())])
            ),
        ],
        |r| r,
    );
}

/// Real URIs, then mutated: segments replaced, inserted or dropped, odd queries, odd methods.
#[test]
fn fuzz_uris() {
    let bench = Bench::new();
    const TEMPLATES: &[&str] = &[
        "/v1/secret/data/corpus/existing",
        "/v1/dev/data/corpus/existing",
        "/v1/secret/metadata/corpus/existing",
        "/v1/secret/metadata/",
        "/v1/prod/metadata/corpus",
        "/v1/secret/data/corpus/loop",
        "/v1/secret/delete/corpus/existing",
        "/v1/secret/rollback/corpus/existing",
        "/v1/sys/policies",
        "/v1/sys/policies/all",
        "/v1/sys/environments",
        "/v1/sys/export/dev",
        "/v1/sys/audit/export",
        "/v1/sys/keys/status",
        "/v1/sys/health",
        "/v1/auth/token/lookup-self",
        "/v1/auth/token/accessors",
        "/v1/openapi.json",
        "/metrics",
    ];
    let segment = prop_oneof![
        4 => prop::sample::select(vec![
            "secret", "prod", "dev", "staging", "sys", "auth", "token", "data", "metadata",
            "delete", "undelete", "destroy", "rollback", "policies", "export", "audit", "keys",
            "status", "lookup-self", "create", "accessors", "environments", "template", "render",
            "health", "corpus", "existing", "loop", "x", "", ".", "..", "%2e%2e", "%2E", "%00",
            "%ff", "%c3%a9", "%2f", "%", "%zz", "a%20b", "~", "@", "*", "{mount}", ":x",
        ])
        .prop_map(str::to_string),
        2 => "[a-zA-Z0-9._~%-]{0,12}",
        1 => any::<String>().prop_map(|s| encode_uri(s.as_bytes(), false)),
        1 => (1usize..700).prop_map(|n| "a".repeat(n)),
    ];
    // (what, where, new segment): 0 replace, 1 insert, 2 remove.
    let edits = prop::collection::vec((0u8..3, any::<prop::sample::Index>(), segment), 0..3);
    let query = prop_oneof![
        4 => Just(String::new()),
        2 => prop::sample::select(vec![
            "?list=true", "?list=1", "?version=0", "?version=1", "?version=18446744073709551615",
            "?version=18446744073709551616", "?version=-1", "?version=9223372036854775808",
            "?list=true&list=false", "?resolve=false", "?after=18446744073709551615&limit=0",
            "?after=1&limit=99999999999", "?prefix=..", "?prefix=corpus/", "?prefix=%ff",
            "?=&&=", "?%zz=%", "?sealedcode=200", "?list",
        ])
        .prop_map(str::to_string),
        1 => any::<String>().prop_map(|s| format!("?{}", encode_uri(s.as_bytes(), true))),
    ];
    let method = prop_oneof![
        6 => Just("GET"),
        2 => Just("LIST"),
        4 => prop::sample::select(vec!["PUT", "POST", "DELETE", "PATCH", "HEAD", "OPTIONS", "FOO"]),
    ];
    let body = prop_oneof![
        2 => Just(Vec::new()),
        1 => Just(b"{}".to_vec()),
        1 => body(prop_oneof![kv_write_body(), metadata_body(), policy_body()].boxed()),
    ];
    let strategy = (
        method,
        prop::sample::select(TEMPLATES),
        edits,
        query,
        body,
        prop::sample::select(vec![Who::Root, Who::User, Who::Nobody]),
    );
    bench.fuzz(strategy, |(method, template, edits, query, body, who)| {
        let mut segments: Vec<String> = template.split('/').skip(1).map(str::to_string).collect();
        for (op, at, seg) in edits {
            let i = at.index(segments.len() + 1);
            match op {
                0 if i < segments.len() => segments[i] = seg,
                2 if i < segments.len() && segments.len() > 1 => {
                    segments.remove(i);
                }
                _ => segments.insert(i, seg),
            }
        }
        Req {
            method: method.into(),
            uri: format!("/{}{query}", segments.join("/")),
            who,
            body,
        }
    });
}

/// Parses a corpus file: a first line `METHOD URI [root|user|none] [STATUS]`, then the body.
fn parse_case(name: &str, bytes: &[u8]) -> (Req, Option<u16>) {
    let nl = bytes
        .iter()
        .position(|&b| b == b'\n')
        .unwrap_or(bytes.len());
    let head = std::str::from_utf8(&bytes[..nl])
        .unwrap_or_else(|_| panic!("{name}: first line is not UTF-8"));
    let body = bytes.get(nl + 1..).unwrap_or_default().to_vec();
    let mut parts = head.split(' ');
    let method = parts.next().unwrap().to_string();
    let uri = encode_uri(
        parts
            .next()
            .unwrap_or_else(|| panic!("{name}: no URI"))
            .as_bytes(),
        true,
    );
    let who = match parts.next().unwrap_or("root") {
        "root" => Who::Root,
        "user" => Who::User,
        "none" => Who::Nobody,
        other => panic!("{name}: unknown caller {other:?}"),
    };
    let status = parts.next().map(|s| {
        s.parse()
            .unwrap_or_else(|_| panic!("{name}: bad status {s:?}"))
    });
    (
        Req {
            method,
            uri,
            who,
            body,
        },
        status,
    )
}

fn panic_message(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

#[test]
fn corpus_replays_cleanly() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "case"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 20,
        "the corpus has only {} cases",
        files.len()
    );
    let bench = Bench::new();
    let mut failures = vec![];
    for f in &files {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        let (req, want) = parse_case(&name, &std::fs::read(f).unwrap());
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| bench.run(&req)))
            .unwrap_or_else(|p| Err(format!("the server panicked: {}", panic_message(&p))));
        match outcome {
            Err(e) => failures.push(format!("{name}: {e}")),
            Ok(r) if want.is_some_and(|w| w != r.status.as_u16()) => failures.push(format!(
                "{name}: wanted {}, got {}: {}",
                want.unwrap(),
                r.status,
                r.text
            )),
            Ok(_) => {}
        }
    }
    assert!(
        failures.is_empty(),
        "corpus failures:\n{}",
        failures.join("\n")
    );
}
