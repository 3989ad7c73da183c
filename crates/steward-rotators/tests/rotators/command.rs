//! `command` with shell scripts that keep issued keys in a state directory.

use std::{os::unix::fs::PermissionsExt, path::Path, time::Instant};

use serde_json::json;
use steward_rotators::{command::CommandRotator, ErrorKind, Rotator};

use crate::common::{cred, cx, expect_err};

/// The rotation script: records its argv, environment and request, then acts on the request
/// (JSON handled by python3, fed through a pipe so nothing lands in argv).
const SCRIPT: &str = r#"#!/bin/sh
set -eu
input=$(cat)
printf '%s\n' "$0" "$@" > "$STATE/argv"
env > "$STATE/env"
printf '%s' "$input" > "$STATE/request.json"
printf '%s' "$input" | python3 -c '
import json, os, sys
req = json.load(sys.stdin)
keys_file = os.path.join(os.environ["STATE"], "keys")
keys = open(keys_file).read().split() if os.path.exists(keys_file) else []
action = req["action"]
if action == "create":
    key = "cmdkey_" + req["attempt_id"] + "_" + str(len(keys))
    keys.append(key)
    print(json.dumps({"credential": {"api_key": key, "key_id": str(len(keys))}}))
elif action == "test":
    if req["credential"]["api_key"] not in keys:
        sys.stderr.write("unknown key " + req["credential"]["api_key"] + "\n")
        sys.exit(3)
elif action in ("revoke", "discard"):
    keys = [k for k in keys if k != req["credential"]["api_key"]]
open(keys_file, "w").write("\n".join(keys))
'
"#;

fn write_script(dir: &Path, name: &str, body: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, body).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path.display().to_string()
}

#[tokio::test]
async fn create_test_revoke_through_stdin_only() {
    let dir = tempfile::tempdir().unwrap();
    let script = write_script(dir.path(), "rotate.sh", SCRIPT);
    let state = dir.path().display().to_string();
    let settings = json!({
        "command": [script, "--account", "prod"],
        "timeout": "20s",
        "env": {"PATH": "/usr/local/bin:/usr/bin:/bin", "STATE": state}
    });
    let admin = cred(json!({"api_token": "admin_tok_9f8e7d6c"}));
    let r = CommandRotator;

    let first = r.create(&cx(&settings, None, Some(&admin))).await.unwrap();
    let step = cx(&settings, Some(&first), Some(&admin));
    let pending = r.create(&step).await.unwrap();
    let key = pending.str("api_key").unwrap().to_string();
    assert_eq!(key, "cmdkey_attempt-0001_1");
    r.set(&step, &pending).await.unwrap();
    r.test(&step, &pending).await.unwrap();

    // The request went through stdin, with the admin credential; argv and the environment
    // hold no secret, and Steward's own environment was not passed on.
    let request: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("request.json")).unwrap())
            .unwrap();
    assert_eq!(request["action"], json!("test"));
    assert_eq!(request["credential"]["api_key"], json!(key));
    assert_eq!(request["admin"]["api_token"], json!("admin_tok_9f8e7d6c"));
    let argv = std::fs::read_to_string(dir.path().join("argv")).unwrap();
    assert!(argv.ends_with("--account\nprod\n"), "{argv}");
    let env = std::fs::read_to_string(dir.path().join("env")).unwrap();
    for text in [&argv, &env] {
        assert!(
            !text.contains(&key) && !text.contains("admin_tok_9f8e7d6c"),
            "{text}"
        );
    }
    assert!(
        !env.contains("CARGO"),
        "the environment is not inherited: {env}"
    );

    // Revoke the first key: its test now fails with the script's stderr, key blanked out.
    let after = cx(&settings, Some(&pending), Some(&admin));
    r.revoke(&after, &first).await.unwrap();
    let first_key = first.str("api_key").unwrap().to_string();
    let m = expect_err(
        r.test(&after, &first).await,
        ErrorKind::Rejected,
        &[&first_key],
    );
    assert!(
        m.contains("exited with code 3") && m.contains("unknown key ***"),
        "{m}"
    );
    r.test(&after, &pending).await.unwrap();

    // Discard removes a pending key.
    let p2 = r.create(&after).await.unwrap();
    r.test(&after, &p2).await.unwrap();
    r.discard(&after, &p2).await.unwrap();
    expect_err(r.test(&after, &p2).await, ErrorKind::Rejected, &[]);
}

#[tokio::test]
async fn failures_timeouts_and_bad_output() {
    let dir = tempfile::tempdir().unwrap();
    let r = CommandRotator;
    let current = cred(json!({"api_key": "cur_secret_5a4b3c2d"}));

    // Non-zero exit: Rejected with the exit code and the end of stderr (redacted).
    let fail = write_script(
        dir.path(),
        "fail.sh",
        "#!/bin/sh\ncat >/dev/null\necho 'lots of noise' >&2\necho 'quota exceeded for cur_secret_5a4b3c2d' >&2\nexit 7\n",
    );
    let settings = json!({"command": [fail]});
    let m = expect_err(
        r.create(&cx(&settings, Some(&current), None)).await,
        ErrorKind::Rejected,
        &["cur_secret_5a4b3c2d"],
    );
    assert!(
        m.contains("code 7") && m.contains("quota exceeded for ***"),
        "{m}"
    );

    // Timeout: Unavailable, and the whole process group is killed.
    let pidfile = dir.path().join("sleep.pid");
    let slow = write_script(
        dir.path(),
        "slow.sh",
        &format!(
            "#!/bin/sh\n/bin/sleep 60 &\necho $! > {}\nwait\n",
            pidfile.display()
        ),
    );
    let settings = json!({"command": [slow], "timeout": "1s"});
    let started = Instant::now();
    let m = expect_err(
        r.create(&cx(&settings, Some(&current), None)).await,
        ErrorKind::Unavailable,
        &["cur_secret_5a4b3c2d"],
    );
    assert!(
        started.elapsed().as_secs() < 10,
        "the timeout did not stop the run"
    );
    assert!(m.contains("killed") && m.contains("1s"), "{m}");
    let pid = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .to_string();
    let mut gone = false;
    for _ in 0..50 {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        // Gone, or a zombie waiting for its new parent to reap it.
        if status.is_empty() || status.contains("State:\tZ") {
            gone = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(gone, "the script's child (pid {pid}) survived the timeout");

    // Exit 0 without a credential on create: Rejected, output not quoted.
    let quiet = write_script(
        dir.path(),
        "quiet.sh",
        "#!/bin/sh\ncat >/dev/null\necho '{\"key\": \"leaked_value_1234\"}'\n",
    );
    let settings = json!({"command": [quiet]});
    let m = expect_err(
        r.create(&cx(&settings, None, None)).await,
        ErrorKind::Rejected,
        &["leaked_value_1234"],
    );
    assert!(m.contains("no \"credential\""), "{m}");

    // A program that does not exist: Invalid.
    let settings = json!({"command": ["/nonexistent/rotate"]});
    let m = expect_err(
        r.create(&cx(&settings, None, None)).await,
        ErrorKind::Invalid,
        &[],
    );
    assert!(m.contains("/nonexistent/rotate"), "{m}");
}
