//! Command-line definitions. Every setting has a flag and an environment variable; values
//! that are secret (secret values, shares, tokens) are read from stdin or files, never argv.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(
    name = "steward",
    version,
    about = "Production operations in one binary: an encrypted, audited, Vault-compatible secrets store (more pillars to come).",
    long_about = "Steward keeps your secrets encrypted, versioned and audited, speaks Vault's KV v2 API, \
and hands secrets to programs without putting them on disk or argv.\n\n\
Start a server:          steward up\n\
Store a secret:          echo -n 's3cret' | steward secret put prod/billing/db_password\n\
Read it:                 steward secret get prod/billing/db_password\n\
Run a program with them: steward run --env prod --prefix billing/ -- ./server\n\n\
Client commands find the server at STEWARD_ADDR (default http://127.0.0.1:8731) and use the \
token in STEWARD_TOKEN, or the root token file in the data directory.",
    after_help = "Exit codes: 0 ok, 1 error, 2 usage, 3 configuration, 4 not found, 5 permission denied or bad token, 6 conflict (check-and-set), 7 sealed or unavailable."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Debug, Clone)]
pub struct Global {
    /// Configuration file [default: ./steward.toml if it exists]
    #[arg(long, global = true, env = "STEWARD_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Data directory: embedded store, root key file, root token [default: ./.steward]
    #[arg(long, global = true, env = "STEWARD_DATA", value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Store: `sqlite` (embedded, default) or a postgres:// URL
    #[arg(long, global = true, env = "STEWARD_STORE", value_name = "URL")]
    pub store: Option<String>,
    /// Server address for client commands [default: http://<server.listen>]
    #[arg(long, global = true, env = "STEWARD_ADDR", value_name = "URL")]
    pub addr: Option<String>,
    /// Output format of listing commands
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = Output::Human)]
    pub output: Output,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    Human,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Start the server (initializes the store on first start and prints the root token once)
    Up(UpArgs),
    /// Initialize a store without starting it; with --shares, seal it with Shamir shares
    Init(InitArgs),
    /// Give a sealed server key shares, one per line on stdin
    Unseal,
    /// Check steward.toml without starting anything
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Read and write secrets
    Secret {
        #[command(subcommand)]
        command: SecretCommand,
    },
    /// Manage tokens
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Manage access policies
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Verify, export and search the audit log
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Encryption key rotation (the keyring under the root key)
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Run a command with secrets as environment variables (the child gets them, your shell does not)
    Run(RunArgs),
    /// Rotate secrets: configure rotators and schedules, rotate now, roll back, see status
    Rotate {
        #[command(subcommand)]
        command: RotateCommand,
    },
    /// Print the durable change events (writes, rotations, expiry warnings); --follow waits for more
    Events(EventsArgs),
    /// Keep files rendered from templates current; run a reload command when one changes
    Agent(AgentArgs),
    /// Render templates containing ${secret:ENV/PATH} references
    Template {
        #[command(subcommand)]
        command: TemplateCommand,
    },
    /// Print every secret under a prefix as dotenv or JSON
    Export(ExportArgs),
    /// Alerts: list, show, acknowledge; the dead letters and the notification log
    Alerts {
        #[command(subcommand)]
        command: AlertsCommand,
    },
    /// Silences (Alertmanager-compatible): mute new notifications of matching alerts
    Silence {
        #[command(subcommand)]
        command: SilenceCommand,
    },
    /// Notification channels: send a test notification
    Notify {
        #[command(subcommand)]
        command: NotifyCommand,
    },
    /// Maintenance windows: mute matching alerts while you work (deploys, backups)
    Maintenance {
        #[command(subcommand)]
        command: MaintenanceCommand,
    },
    /// Health checks: list with their state, show one with its latest runs and uptime, run one now
    Checks {
        #[command(subcommand)]
        command: ChecksCommand,
    },
    /// Send a heartbeat for a `type = "heartbeat"` check (from a cron job or worker)
    #[command(
        after_help = "Examples:\n  nightly-job && steward beat nightly-job\n  nightly-job || steward beat nightly-job --fail --message \"exit $?\""
    )]
    Beat {
        /// The heartbeat check's name
        name: String,
        /// Report that the job failed (the check goes down at once)
        #[arg(long)]
        fail: bool,
        /// A short message stored with a failure
        #[arg(long)]
        message: Option<String>,
    },
    /// Backups run by the server from `[backup]`: run one now, list runs, snapshots, check, prune, restore, copy
    #[command(
        after_help = "Examples:\n  steward backup sources\n  steward backup run app-db\n  steward backup list app-db -o json\n  steward backup snapshots app-db\n  steward backup check main --read-data all\n  steward backup restore app-db --database app_restored\n  steward backup restore files --target-dir /srv/restore\n  steward backup copy app-db --to offsite\n\nFor a repository used directly, without a server, see `steward repo`."
    )]
    Backup {
        #[command(subcommand)]
        command: BackupCommand,
    },
    /// Restore drills: restore the newest backup into a scratch database, check it, measure the restore time
    #[command(after_help = "Examples:\n  steward drill run app-db\n  steward drill list -o json")]
    Drill {
        #[command(subcommand)]
        command: DrillCommand,
    },
    /// Disaster recovery: per source the last backup, last passed drill, measured RPO and RTO against their targets
    #[command(after_help = "Examples:\n  steward dr report\n  steward dr report -o json")]
    Dr {
        #[command(subcommand)]
        command: DrCommand,
    },
    /// A backup repository, directly and without a server (restic format: restic can read it too)
    #[command(
        after_help = "Examples:\n  export STEWARD_REPO=/srv/backups/app STEWARD_REPO_PASSWORD_FILE=~/.repo-password\n  steward repo init\n  steward repo backup /var/lib/app --exclude '*.tmp'\n  pg_dump -Fc app | steward repo backup --stdin-filename app.pgdump\n  steward repo snapshots -o json\n  steward repo restore latest --target /tmp/restore\n  steward repo dump latest app.pgdump | pg_restore -d app_copy\n  steward repo check --read-data-subset 1/30"
    )]
    Repo(RepoArgs),
    /// Print shell completions
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Args, Debug)]
pub struct UpArgs {
    /// Address to listen on [default: 127.0.0.1:8731]
    #[arg(long, env = "STEWARD_LISTEN", value_name = "ADDR")]
    pub listen: Option<std::net::SocketAddr>,
}

#[derive(Args, Debug)]
pub struct InitArgs {
    /// Split the root key into this many Shamir shares (the server then starts sealed)
    #[arg(long, requires = "threshold")]
    pub shares: Option<u8>,
    /// Shares needed to unseal
    #[arg(long, requires = "shares")]
    pub threshold: Option<u8>,
}

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Validate the configuration file; errors name file, line and key
    Check,
}

#[derive(Subcommand, Debug)]
pub enum SecretCommand {
    /// Write a new version. The value comes from stdin or --file, never from argv
    Put {
        /// ENV/PATH, e.g. prod/billing/db_password
        target: String,
        /// Read the value from this file instead of stdin
        #[arg(long, value_name = "FILE")]
        file: Option<PathBuf>,
        /// The value is a JSON object
        #[arg(long)]
        json: bool,
        /// Check-and-set: only write if the secret is at this version (0 = must not exist)
        #[arg(long)]
        cas: Option<u64>,
        /// Description (metadata)
        #[arg(long)]
        description: Option<String>,
        /// Owner (metadata)
        #[arg(long)]
        owner: Option<String>,
        /// Expiry time, RFC 3339 (metadata)
        #[arg(long, value_name = "TIME")]
        expires_at: Option<chrono::DateTime<chrono::Utc>>,
    },
    /// Print a secret's value (latest, or --version)
    Get {
        target: String,
        #[arg(long)]
        version: Option<u64>,
        /// Print one field of a JSON object value
        #[arg(long)]
        field: Option<String>,
        /// Do not expand ${secret:...} references
        #[arg(long)]
        raw: bool,
    },
    /// List keys under ENV or ENV/PREFIX
    List { target: String },
    /// Secrets that expire within a window (or already have), soonest first
    Expiring {
        /// e.g. 30d, 7d, 12h
        #[arg(long, default_value = "30d", value_name = "DURATION")]
        within: String,
    },
    /// Show a secret's versions and metadata
    History { target: String },
    /// Make a new version with an older version's value
    Rollback {
        target: String,
        #[arg(long, value_name = "VERSION")]
        to: u64,
    },
    /// Soft-delete the latest version, or --versions
    Delete {
        target: String,
        #[arg(long, value_delimiter = ',')]
        versions: Vec<u64>,
    },
    /// Restore soft-deleted versions
    Undelete {
        target: String,
        #[arg(long, value_delimiter = ',', required = true)]
        versions: Vec<u64>,
    },
    /// Erase versions for good
    Destroy {
        target: String,
        #[arg(long, value_delimiter = ',', required = true)]
        versions: Vec<u64>,
    },
}

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Create a token and print it (once)
    Create {
        /// Policy to attach (repeatable)
        #[arg(long = "policy")]
        policies: Vec<String>,
        /// Lifetime, e.g. 1h, 30m, 7d
        #[arg(long)]
        ttl: Option<String>,
        /// Renewals never extend past this
        #[arg(long)]
        max_ttl: Option<String>,
        #[arg(long, default_value = "")]
        name: String,
    },
    /// Show your token, or another by accessor
    Lookup { accessor: Option<String> },
    /// List tokens (admin)
    List,
    /// Renew your token
    Renew {
        #[arg(long)]
        increment: Option<String>,
    },
    /// Revoke your token, or another by accessor
    Revoke { accessor: Option<String> },
}

#[derive(Subcommand, Debug)]
pub enum PolicyCommand {
    /// Create or replace a policy from a JSON file or stdin
    Put {
        name: String,
        #[arg(long, value_name = "FILE")]
        file: Option<PathBuf>,
    },
    Get {
        name: String,
    },
    List,
    Delete {
        name: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Check the hash chain; exits 1 and names the first bad entry if it is broken
    Verify,
    /// Write entries as JSON lines
    Export {
        /// Start after this sequence number
        #[arg(long, default_value_t = 0)]
        after: u64,
        /// Output file [default: stdout]
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// HMAC a value read from stdin, to search the log for it
    Hash,
}

#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// New active encryption key; every data key is re-wrapped in the background
    Rotate,
    /// Active key, keys in the ring, re-wraps pending
    Status,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    #[arg(long)]
    pub env: String,
    /// Only secrets under this prefix; names are relative to it
    #[arg(long, default_value = "")]
    pub prefix: String,
    /// Watch the injected secrets; when one changes (a rotation), apply --on-change
    #[arg(long)]
    pub watch: bool,
    /// With --watch: `restart` (SIGTERM, wait --restart-grace, start again with the new
    /// values) or `signal:NAME` (send NAME, e.g. signal:SIGHUP, to a child that re-reads them)
    #[arg(long, default_value = "restart", value_name = "ACTION")]
    pub on_change: String,
    /// With --on-change restart: how long the child gets to exit before SIGKILL
    #[arg(long, default_value = "10s", value_name = "DURATION")]
    pub restart_grace: String,
    /// Command and arguments
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

// Parsed once per process; boxing the large variant would only obscure the clap derive.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
pub enum RotateCommand {
    /// Set or replace a secret's rotation: rotator, settings, schedule, grace period.
    ///
    /// Example: steward rotate configure prod/db/app --rotator postgres --admin prod/db/admin
    ///   --settings '{"strategy":"alternating","usernames":["app_a","app_b"]}' --every 30d --grace 1h
    Configure {
        /// ENV/PATH of the secret to rotate
        target: String,
        /// random, postgres, mysql, redis, webhook or command
        #[arg(long)]
        rotator: String,
        /// Rotator settings as JSON, or @FILE to read them from a file (never secrets)
        #[arg(long, value_name = "JSON")]
        settings: Option<String>,
        /// PATH or ENV/PATH of the secret holding the rotator's admin credential
        #[arg(long)]
        admin: Option<String>,
        /// Rotate every DURATION (presets: 30d, 60d, 90d)
        #[arg(long, value_name = "DURATION", conflicts_with_all = ["cron", "manual"])]
        every: Option<String>,
        /// Rotate on a cron schedule (5 fields, UTC), e.g. "0 3 * * 1"
        #[arg(long, value_name = "EXPR", conflicts_with = "manual")]
        cron: Option<String>,
        /// Only start rotations inside this daily window, "HH:MM-HH:MM" UTC
        #[arg(long, value_name = "WINDOW")]
        window: Option<String>,
        /// The next rotation at exactly this time (RFC 3339), then the schedule goes on
        #[arg(long, value_name = "TIME")]
        next_at: Option<chrono::DateTime<chrono::Utc>>,
        /// Never rotate on a schedule; only `steward rotate now`
        #[arg(long)]
        manual: bool,
        /// How long the previous credential keeps working
        #[arg(long, default_value = "1h", value_name = "DURATION")]
        grace: String,
        /// consumers (revoke once every recent reader has the new value, or at the end of the
        /// grace period) or grace (at the end of the grace period)
        #[arg(long, default_value = "consumers")]
        retire: String,
        /// Attempts, each with a fresh value, before the rotation is declared failed
        #[arg(long, default_value_t = 5)]
        max_attempts: u32,
    },
    /// Rotate now; --wait blocks until it finished or failed
    Now {
        target: String,
        #[arg(long)]
        wait: bool,
    },
    /// State of one rotation, or of all: step, last outcome, next due, laggard consumers
    Status { target: Option<String> },
    /// Make the previous value current again, in the target system too; --wait blocks
    Rollback {
        target: String,
        #[arg(long)]
        wait: bool,
    },
    /// Remove a secret's rotation config (the secret stays)
    Remove { target: String },
}

#[derive(Args, Debug)]
pub struct EventsArgs {
    /// Start after this cursor (the `seq` of the last event you saw); `latest` for new ones only
    #[arg(long, default_value = "0")]
    pub after: String,
    /// Keep waiting for new events
    #[arg(long, short)]
    pub follow: bool,
}

#[derive(Args, Debug)]
pub struct AgentArgs {
    /// Template to render: SOURCE:DESTINATION (repeatable). The file is written 0600, atomically
    #[arg(long = "template", value_name = "SRC:DEST", required = true)]
    pub templates: Vec<String>,
    /// Run this (through sh -c) after a file changed, e.g. "nginx -s reload"
    #[arg(long, value_name = "COMMAND")]
    pub command: Option<String>,
    /// Render once and exit
    #[arg(long)]
    pub once: bool,
}

#[derive(Subcommand, Debug)]
pub enum TemplateCommand {
    /// Render IN to stdout or --out (written 0600)
    Render {
        input: PathBuf,
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    #[arg(long)]
    pub env: String,
    #[arg(long, default_value = "")]
    pub prefix: String,
    #[arg(long, value_enum, default_value_t = ExportFormat::Dotenv)]
    pub format: ExportFormat,
}

#[derive(ValueEnum, Debug, Clone, Copy)]
pub enum ExportFormat {
    Dotenv,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum BackupCommand {
    /// Every configured source: type, repository, schedule, next backup and drill, last backup
    Sources,
    /// Back a source up now and wait for it (exit code 1 when it fails)
    Run {
        /// The source's name (see `steward backup sources`)
        source: String,
    },
    /// Past runs, newest first: backups, drills, checks, prunes, copies, restores
    List {
        /// Only this source or repository
        target: Option<String>,
        /// Only runs of this kind: backup, drill, check, prune, copy, restore
        #[arg(long)]
        op: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// A source's snapshots in its repository, newest first
    Snapshots { source: String },
    /// Check a repository's structure and read its data (default: the day's share, so that
    /// every pack is read once in `read_data_days`)
    Check {
        repository: String,
        /// `all`, or part N of M such as `3/30`
        #[arg(long)]
        read_data: Option<String>,
    },
    /// Free the data no snapshot uses any more
    Prune {
        repository: String,
        /// Report what would be removed, remove nothing
        #[arg(long)]
        dry_run: bool,
    },
    /// Restore a snapshot (default: the source's newest) into a directory, or a database
    /// source into a new database on its server
    Restore {
        source: String,
        #[arg(long)]
        snapshot: Option<String>,
        /// Write the snapshot's files here (an absolute path; any source)
        #[arg(long, conflicts_with = "database")]
        target_dir: Option<std::path::PathBuf>,
        /// Restore into this new database (postgres and mariadb sources); it must not exist
        #[arg(long)]
        database: Option<String>,
    },
    /// Copy a source's newest snapshot (or --snapshot) to another repository
    Copy {
        source: String,
        /// The repository to copy to
        #[arg(long)]
        to: String,
        #[arg(long)]
        snapshot: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum DrillCommand {
    /// Drill a source now: restore into a scratch database, compare row counts, run its assertions (exit code 1 when it fails); a mode = "base" source is recovered to a point in time in a throwaway cluster
    #[command(
        after_help = "Examples:\n  steward drill run app-db\n  steward drill run app-db --snapshot 4f2a9c1e\n  steward drill run pg-base --to-time 2026-12-01T09:30:00Z   # mode = \"base\": recover to that time"
    )]
    Run {
        source: String,
        /// Drill this snapshot instead of the newest backup (logical dumps)
        #[arg(long, conflicts_with = "to_time")]
        snapshot: Option<String>,
        /// Recover to this time (RFC 3339) instead of the configured point (mode = "base" sources)
        #[arg(long, value_parser = parse_rfc3339)]
        to_time: Option<chrono::DateTime<chrono::Utc>>,
    },
    /// Past drills, newest first, with the measured restore time
    List {
        source: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
}

#[derive(Subcommand, Debug)]
pub enum DrCommand {
    /// The DR plan with real numbers: last backup, last passed drill, RPO and RTO against targets (exit code 1 when a target is missed)
    Report,
}

#[derive(Subcommand, Debug)]
pub enum ChecksCommand {
    /// Every check with its state (up, down, unknown) and last run
    #[command(after_help = "Examples:\n  steward checks list\n  steward checks list -o json")]
    List,
    /// One check: state, last run with its facts, latest runs, uptime and latency by hour or day
    #[command(
        after_help = "Examples:\n  steward checks show api\n  steward checks show api --res day --buckets 30"
    )]
    Show {
        name: String,
        /// Roll-up resolution: minute, hour or day
        #[arg(long, default_value = "hour")]
        res: String,
        /// How many buckets back from now
        #[arg(long, default_value_t = 24)]
        buckets: u32,
    },
    /// Run a check now and print the outcome (exit code 1 when it fails)
    Run { name: String },
    /// SLOs: attainment over their window, error budget left, burn rates (5m, 30m, 1h, 6h)
    #[command(after_help = "Examples:\n  steward checks slos\n  steward checks slos -o json")]
    Slos,
}

#[derive(Subcommand, Debug)]
pub enum AlertsCommand {
    /// List alerts (firing, pending, and resolved ones not yet notified)
    #[command(
        after_help = "Examples:\n  steward alerts list\n  steward alerts list 'severity=\"critical\"' -o json"
    )]
    List {
        /// Matchers every listed alert satisfies, e.g. 'service=~"db|api"'
        matchers: Vec<String>,
    },
    /// Show one alert: labels, annotations, receivers, what mutes it
    Show { fingerprint: String },
    /// Acknowledge an alert's groups: no more reminders or escalation; the resolve still goes out
    Ack {
        /// An alert fingerprint (see `alerts list`) or a group id
        target: String,
        #[arg(long, default_value = "")]
        comment: String,
    },
    /// Notifications that could not be delivered; --replay sends them again
    DeadLetters {
        /// Move them (all, or --id ones) back to the outbox with fresh attempts
        #[arg(long)]
        replay: bool,
        /// Only these notification ids
        #[arg(long = "id", value_name = "ID")]
        ids: Vec<String>,
    },
    /// Notifications waiting in the outbox (first attempt or retry)
    Pending,
    /// The notification log: what was sent to which channel and when, newest first
    Log {
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Convert an Alertmanager alertmanager.yml into steward.toml's [alerting] section (locally,
    /// no server): the TOML on stdout; notes on stderr (credentials to store with `steward
    /// secret put`, and what was not converted)
    #[command(
        after_help = "Example:\n  steward alerts import-alertmanager /etc/alertmanager/alertmanager.yml > alerting.toml"
    )]
    ImportAlertmanager {
        /// The alertmanager.yml to convert
        file: PathBuf,
        /// Environment of the secret references the channels get (ENV/alerting/<channel>#<field>)
        #[arg(long, default_value = "prod")]
        env: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum SilenceCommand {
    /// Add a silence; prints its id
    #[command(
        after_help = "Example:\n  steward silence add 'alertname=\"DiskFull\"' 'host=db1' --duration 2h --comment 'resizing the volume'"
    )]
    Add {
        /// Matchers (at least one): name="value", name!="value", name=~"regex", name!~"regex"
        #[arg(required = true)]
        matchers: Vec<String>,
        /// How long from now (or from --start)
        #[arg(long, default_value = "1h")]
        duration: String,
        /// Start time (RFC 3339) [default: now]
        #[arg(long)]
        start: Option<String>,
        /// Why (shown to everyone who sees the silence)
        #[arg(long, required = true)]
        comment: String,
        /// Who [default: the token's display name]
        #[arg(long, default_value = "")]
        author: String,
    },
    /// List silences (active, pending and recently expired)
    List,
    /// End a silence now
    Expire { id: String },
}

#[derive(Subcommand, Debug)]
pub enum NotifyCommand {
    /// Send a test notification through CHANNEL now and report the outcome
    Test { channel: String },
}

#[derive(Subcommand, Debug)]
pub enum MaintenanceCommand {
    /// Open a window; prints its id (close it with `maintenance end ID`)
    #[command(
        after_help = "Example (a deploy muting its own service):\n  id=$(steward maintenance start 'service=\"api\"' --duration 30m --comment deploy)\n  ./deploy.sh; steward maintenance end \"$id\""
    )]
    Start {
        /// Matchers of the alerts it mutes; none mutes every alert
        matchers: Vec<String>,
        /// Length of the window (one-off) or of each occurrence (with --cron)
        #[arg(long, default_value = "1h")]
        duration: String,
        /// A recurring window: cron expression for each start, e.g. "0 2 * * SUN"
        #[arg(long)]
        cron: Option<String>,
        /// Time zone of --cron (IANA name)
        #[arg(long)]
        timezone: Option<String>,
        #[arg(long, default_value = "")]
        comment: String,
        #[arg(long, default_value = "")]
        name: String,
        /// Show it on the public status page (its name, comment and times; never matchers)
        #[arg(long)]
        public: bool,
    },
    /// Close a window now
    End { id: String },
    /// List windows (from the config and opened through the API)
    List,
}

#[derive(Args, Debug)]
pub struct RepoArgs {
    /// The repository: a local directory, or `s3:http(s)://host[:port]/bucket/prefix` (credentials
    /// from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, optional AWS_SESSION_TOKEN and
    /// AWS_DEFAULT_REGION, as restic)
    #[arg(
        long,
        short = 'r',
        global = true,
        env = "STEWARD_REPO",
        value_name = "DIR|s3:URL"
    )]
    pub repo: Option<String>,
    /// File holding the repository password (or set STEWARD_REPO_PASSWORD; never on argv)
    #[arg(
        long,
        global = true,
        env = "STEWARD_REPO_PASSWORD_FILE",
        value_name = "FILE"
    )]
    pub password_file: Option<PathBuf>,
    #[command(subcommand)]
    pub command: RepoCommand,
}

#[derive(Subcommand, Debug)]
pub enum RepoCommand {
    /// Create a new repository (format version 2, compressed, encrypted)
    Init,
    /// Back up files and directories, or stdin with --stdin-filename; unchanged files are
    /// skipped by comparing with the latest snapshot of the same paths
    Backup {
        /// Files and directories to back up
        paths: Vec<PathBuf>,
        /// Leave out what matches this glob (repeatable): `*.tmp`, `cache/*`, `/abs/path`
        #[arg(long, value_name = "GLOB")]
        exclude: Vec<String>,
        /// Tag the snapshot (repeatable)
        #[arg(long, value_name = "TAG")]
        tag: Vec<String>,
        /// Read the data to back up from stdin and store it as this file name
        #[arg(long, value_name = "NAME")]
        stdin_filename: Option<String>,
        /// Host name recorded in the snapshot [default: this machine's]
        #[arg(long)]
        host: Option<String>,
        /// Compression: `auto` (zstd level 3, like restic's auto), `max` (level 19: smallest,
        /// slow), `off`, or a zstd level from -7 (fastest) to 22
        #[arg(long, default_value = "auto", value_name = "LEVEL")]
        compression: String,
    },
    /// List snapshots, oldest first
    Snapshots,
    /// Restore a snapshot (`latest`, or an id or unique id prefix) into a directory
    Restore {
        snapshot: String,
        /// Where to restore (created if missing)
        #[arg(long, value_name = "DIR")]
        target: PathBuf,
        /// Restore only this path inside the snapshot
        #[arg(long, value_name = "PATH")]
        include: Option<String>,
    },
    /// Write one file of a snapshot to stdout (e.g. a database dump into pg_restore)
    Dump { snapshot: String, path: String },
    /// Check the repository's structure; --read-data also reads and verifies every pack
    /// (exit code 1 when a problem is found, naming the damaged files)
    Check {
        /// Read and verify all data
        #[arg(long)]
        read_data: bool,
        /// Read and verify part of the data: `n/m`, the n-th of m parts (e.g. 1/30 a day reads
        /// everything in a month)
        #[arg(long, value_name = "SUBSET")]
        read_data_subset: Option<String>,
    },
    /// Remove snapshots by a retention policy, per group of snapshots (restic's `forget`);
    /// with no --keep-* rule everything is kept
    Forget {
        /// Keep the N newest snapshots
        #[arg(long, value_name = "N", default_value_t = 0)]
        keep_last: u32,
        /// Keep the newest snapshot of each of the N newest hours with one
        #[arg(long, value_name = "N", default_value_t = 0)]
        keep_hourly: u32,
        /// Keep the newest snapshot of each of the N newest days with one
        #[arg(long, value_name = "N", default_value_t = 0)]
        keep_daily: u32,
        /// Keep the newest snapshot of each of the N newest weeks with one
        #[arg(long, value_name = "N", default_value_t = 0)]
        keep_weekly: u32,
        /// Keep the newest snapshot of each of the N newest months with one
        #[arg(long, value_name = "N", default_value_t = 0)]
        keep_monthly: u32,
        /// Keep the newest snapshot of each of the N newest years with one
        #[arg(long, value_name = "N", default_value_t = 0)]
        keep_yearly: u32,
        /// Keep every snapshot within this time of the group's newest, e.g. 1y5m7d2h
        #[arg(long, value_name = "DURATION")]
        keep_within: Option<String>,
        /// Keep snapshots with this tag; `a,b` needs both (repeatable)
        #[arg(long, value_name = "TAG")]
        keep_tag: Vec<String>,
        /// Group snapshots by any of host, paths, tags (comma-separated; empty: one group)
        #[arg(long, value_name = "host,paths,tags", default_value = "host,paths")]
        group_by: String,
        /// Only show what would be removed
        #[arg(long)]
        dry_run: bool,
        /// Prune the repository afterwards (delete the data no snapshot needs any more)
        #[arg(long)]
        prune: bool,
        /// With --prune: unused space allowed to remain (see `prune --max-unused`)
        #[arg(long, value_name = "LIMIT", requires = "prune")]
        max_unused: Option<String>,
    },
    /// Delete the data no snapshot references (packs deleted or repacked, index rewritten)
    Prune {
        /// Only show what would be done
        #[arg(long)]
        dry_run: bool,
        /// Unused space allowed to remain in partly used packs: a percentage (5%), a size
        /// (500M) or `unlimited` [default: 5%]
        #[arg(long, value_name = "LIMIT")]
        max_unused: Option<String>,
    },
    /// Copy snapshots (all when none is given) into another repository; snapshots copied
    /// before are skipped
    Copy {
        /// The destination repository (a directory or an s3: URL), already initialised
        #[arg(long, value_name = "DIR|s3:URL")]
        to: String,
        /// File holding the destination's password [default: the source's password]
        #[arg(long, value_name = "FILE")]
        to_password_file: Option<PathBuf>,
        /// Snapshots to copy (`latest`, ids or unique id prefixes)
        snapshots: Vec<String>,
    },
    /// Take a PostgreSQL base backup for point-in-time recovery: pg_basebackup (tar on stdout,
    /// with the WAL it needs) streamed into a snapshot tagged kind=pg-base (password from
    /// PGPASSWORD or ~/.pgpass; the role needs REPLICATION)
    PgBaseBackup {
        /// The source name (the same as in wal-push's archive_command)
        #[arg(long, value_name = "NAME")]
        source: String,
        /// Server host name, IP address or socket directory
        #[arg(long, default_value = "127.0.0.1")]
        host: String,
        /// Server port
        #[arg(long, default_value_t = 5432)]
        port: u16,
        /// Login role (with the REPLICATION attribute)
        #[arg(long, default_value = "postgres")]
        user: String,
        /// The database the source is about (recorded only: the whole cluster is copied)
        #[arg(long)]
        database: Option<String>,
        /// The pg_basebackup to run [default: pg_basebackup on PATH]
        #[arg(long, value_name = "PATH")]
        pg_basebackup: Option<PathBuf>,
    },
    /// Archive one WAL file (PostgreSQL's archive_command:
    /// `steward repo wal-push --source main %p`); the same file again succeeds, different
    /// content under an archived name fails
    WalPush {
        /// The source name
        #[arg(long, value_name = "NAME")]
        source: String,
        /// The WAL file (%p)
        path: PathBuf,
    },
    /// Restore one archived WAL file (PostgreSQL's restore_command); exit code 1 with a short
    /// message when the archive does not hold it
    WalFetch {
        /// The source name
        #[arg(long, value_name = "NAME")]
        source: String,
        /// The WAL file name (%f)
        segment: String,
        /// Where to write it (%p)
        dest: PathBuf,
    },
    /// Prepare a data directory that recovers a source to a point in time: the latest base
    /// backup before the time, recovery.signal, and restore_command calling wal-fetch
    PgRestore {
        /// The source name
        #[arg(long, value_name = "NAME")]
        source: String,
        /// The new data directory (missing or empty)
        #[arg(long, value_name = "DIR")]
        target_dir: PathBuf,
        /// Recover up to this time (RFC 3339, e.g. 2026-01-31T12:00:00Z) [default: the end of
        /// the archive]
        #[arg(long, value_name = "RFC3339", value_parser = parse_rfc3339)]
        time: Option<chrono::DateTime<chrono::Utc>>,
        /// Password file the restored server's restore_command reads (its path goes into
        /// postgresql.auto.conf, never the password) [default: --password-file]
        #[arg(long, value_name = "FILE")]
        restore_password_file: Option<PathBuf>,
    },
}

/// An RFC 3339 time, for `--to-time` and `--time`.
fn parse_rfc3339(s: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|e| {
            format!("{s:?} is not an RFC 3339 time ({e}): write it like 2026-01-31T12:00:00Z")
        })
}
