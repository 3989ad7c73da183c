//! Trees (directory listings) and their nodes, in restic's JSON form.
//!
//! A tree blob is `{"nodes":[...]}` followed by a newline (restic appends one), its
//! id is the SHA-256 of those bytes, and nodes are sorted by name. Quirks kept for
//! compatibility:
//!
//! * Node names go through Go's `strconv.Quote` before JSON encoding (the outer
//!   quotes dropped), so a name may hold any bytes: `a"b` is stored as `a\"b`,
//!   invalid UTF-8 as `\xNN`. Reading applies `strconv.Unquote`.
//! * `mode` is Go's `os.FileMode`: permission bits plus type bits such as
//!   `ModeDir` (1<<31) and `ModeSymlink` (1<<27) and Go's own setuid/setgid/sticky
//!   bits; see [`go_mode_from_unix`] and [`unix_mode_from_go`].
//! * Times are RFC 3339 with nanoseconds; zero-valued numbers and empty strings are
//!   omitted as Go's `omitempty` does, but `content` is always written (`[]` for an
//!   empty file: restic's check rejects a file with a null content list).
//! * A symlink target that is not valid UTF-8 is stored base64-encoded in
//!   `linktarget_raw`.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};

use base64::Engine as _;
use chrono::{DateTime, Datelike, SecondsFormat, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};
use crate::id::Id;

/// Go's `os.ModeDir`.
pub const GO_MODE_DIR: u32 = 1 << 31;
/// Go's `os.ModeAppend`.
pub const GO_MODE_APPEND: u32 = 1 << 30;
/// Go's `os.ModeSymlink`.
pub const GO_MODE_SYMLINK: u32 = 1 << 27;
/// Go's `os.ModeDevice`.
pub const GO_MODE_DEVICE: u32 = 1 << 26;
/// Go's `os.ModeNamedPipe`.
pub const GO_MODE_NAMED_PIPE: u32 = 1 << 25;
/// Go's `os.ModeSocket`.
pub const GO_MODE_SOCKET: u32 = 1 << 24;
/// Go's `os.ModeSetuid`.
pub const GO_MODE_SETUID: u32 = 1 << 23;
/// Go's `os.ModeSetgid`.
pub const GO_MODE_SETGID: u32 = 1 << 22;
/// Go's `os.ModeCharDevice`.
pub const GO_MODE_CHAR_DEVICE: u32 = 1 << 21;
/// Go's `os.ModeSticky`.
pub const GO_MODE_STICKY: u32 = 1 << 20;
/// Go's `os.ModeIrregular`.
pub const GO_MODE_IRREGULAR: u32 = 1 << 19;

const S_IFMT: u32 = 0o170000;
const S_IFSOCK: u32 = 0o140000;
const S_IFLNK: u32 = 0o120000;
const S_IFREG: u32 = 0o100000;
const S_IFBLK: u32 = 0o060000;
const S_IFDIR: u32 = 0o040000;
const S_IFCHR: u32 = 0o020000;
const S_IFIFO: u32 = 0o010000;

/// Converts a Unix `st_mode` to Go's `os.FileMode`, keeping what restic keeps
/// (permissions, type, setuid, setgid, sticky).
pub fn go_mode_from_unix(st_mode: u32) -> u32 {
    let mut m = st_mode & 0o777;
    if st_mode & 0o4000 != 0 {
        m |= GO_MODE_SETUID;
    }
    if st_mode & 0o2000 != 0 {
        m |= GO_MODE_SETGID;
    }
    if st_mode & 0o1000 != 0 {
        m |= GO_MODE_STICKY;
    }
    m |= match st_mode & S_IFMT {
        S_IFDIR => GO_MODE_DIR,
        S_IFLNK => GO_MODE_SYMLINK,
        S_IFIFO => GO_MODE_NAMED_PIPE,
        S_IFSOCK => GO_MODE_SOCKET,
        S_IFBLK => GO_MODE_DEVICE,
        S_IFCHR => GO_MODE_DEVICE | GO_MODE_CHAR_DEVICE,
        S_IFREG => 0,
        _ => GO_MODE_IRREGULAR,
    };
    m
}

/// The Unix permission bits (including setuid/setgid/sticky) of a Go file mode, as
/// `chmod` takes them.
pub fn unix_mode_from_go(mode: u32) -> u32 {
    let mut m = mode & 0o777;
    if mode & GO_MODE_SETUID != 0 {
        m |= 0o4000;
    }
    if mode & GO_MODE_SETGID != 0 {
        m |= 0o2000;
    }
    if mode & GO_MODE_STICKY != 0 {
        m |= 0o1000;
    }
    m
}

/// The kind of a node.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum NodeType {
    /// Regular file.
    File,
    /// Directory.
    Dir,
    /// Symbolic link.
    Symlink,
    /// Block device.
    Dev,
    /// Character device.
    Chardev,
    /// Named pipe.
    Fifo,
    /// Unix socket.
    Socket,
    /// Something else the OS reported.
    Irregular,
    /// A type this crate does not know (kept as is).
    Other(String),
}

impl NodeType {
    /// restic's name for it.
    pub fn as_str(&self) -> &str {
        match self {
            NodeType::File => "file",
            NodeType::Dir => "dir",
            NodeType::Symlink => "symlink",
            NodeType::Dev => "dev",
            NodeType::Chardev => "chardev",
            NodeType::Fifo => "fifo",
            NodeType::Socket => "socket",
            NodeType::Irregular => "irregular",
            NodeType::Other(s) => s,
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "file" => NodeType::File,
            "dir" => NodeType::Dir,
            "symlink" => NodeType::Symlink,
            "dev" => NodeType::Dev,
            "chardev" => NodeType::Chardev,
            "fifo" => NodeType::Fifo,
            "socket" => NodeType::Socket,
            "irregular" => NodeType::Irregular,
            other => NodeType::Other(other.to_string()),
        }
    }

    /// The type of a Unix `st_mode`.
    pub fn from_unix(st_mode: u32) -> Self {
        match st_mode & S_IFMT {
            S_IFREG => NodeType::File,
            S_IFDIR => NodeType::Dir,
            S_IFLNK => NodeType::Symlink,
            S_IFBLK => NodeType::Dev,
            S_IFCHR => NodeType::Chardev,
            S_IFIFO => NodeType::Fifo,
            S_IFSOCK => NodeType::Socket,
            _ => NodeType::Irregular,
        }
    }
}

impl Serialize for NodeType {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for NodeType {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Ok(NodeType::parse(&String::deserialize(d)?))
    }
}

/// An extended attribute (`{"name","value"}`, value base64).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtendedAttribute {
    /// Attribute name.
    pub name: String,
    /// Raw value.
    #[serde(with = "b64_bytes")]
    pub value: Vec<u8>,
}

mod b64_bytes {
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = Option::<String>::deserialize(d)?.unwrap_or_default();
        base64::engine::general_purpose::STANDARD
            .decode(s.as_bytes())
            .map_err(serde::de::Error::custom)
    }
}

/// Go's zero `time.Time`, which restic writes for unknown times.
pub fn go_zero_time() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("0001-01-01T00:00:00Z")
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_default()
}

/// Formats a time as Go's `time.Time` JSON (RFC 3339 with nanoseconds), with the
/// year clamped to 0..=9999 as restic does.
pub fn format_go_time(t: &DateTime<Utc>) -> String {
    let mut t = *t;
    if t.year() > 9999 {
        t = t.with_year(9999).unwrap_or(t);
    } else if t.year() < 0 {
        t = t.with_year(0).unwrap_or(t);
    }
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// Parses Go's time JSON.
pub fn parse_go_time(s: &str) -> std::result::Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("invalid time {s:?}: {e}"))
}

/// Serde helpers for Go times.
pub mod go_time {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    /// Serializes like Go's `time.Time`.
    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_go_time(t))
    }

    /// Parses RFC 3339; null means Go's zero time.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        match Option::<String>::deserialize(d)? {
            Some(s) => super::parse_go_time(&s).map_err(serde::de::Error::custom),
            None => Ok(super::go_zero_time()),
        }
    }
}

/// Go's `strconv.IsPrint`, approximated: everything but control characters, the
/// Unicode spaces other than ' ', and invisible format characters. Any choice here
/// round-trips through `strconv.Unquote`; it only decides what gets escaped.
fn go_is_print(c: char) -> bool {
    if c == ' ' {
        return true;
    }
    if c.is_control() || c.is_whitespace() {
        return false;
    }
    !matches!(c,
        '\u{00ad}' | '\u{061c}' | '\u{180e}' | '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}'
        | '\u{2060}'..='\u{206f}' | '\u{feff}' | '\u{fff9}'..='\u{fffb}'
        | '\u{e000}'..='\u{f8ff}')
}

/// Go's `strconv.Quote(name)` without the surrounding quotes.
pub fn go_quote(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(bytes.len() + 2);
    let mut rest = bytes;
    while !rest.is_empty() {
        let (valid, invalid_len) = match std::str::from_utf8(rest) {
            Ok(s) => (s, 0),
            Err(e) => {
                let (good, _) = rest.split_at(e.valid_up_to());
                // Safe: from_utf8 said this prefix is valid.
                let s = std::str::from_utf8(good).unwrap_or("");
                (s, e.error_len().unwrap_or(rest.len() - e.valid_up_to()))
            }
        };
        for c in valid.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                c if go_is_print(c) => out.push(c),
                '\u{7}' => out.push_str("\\a"),
                '\u{8}' => out.push_str("\\b"),
                '\u{c}' => out.push_str("\\f"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                '\u{b}' => out.push_str("\\v"),
                c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                    let _ = write!(out, "\\x{:02x}", c as u32);
                }
                c if (c as u32) < 0x10000 => {
                    let _ = write!(out, "\\u{:04x}", c as u32);
                }
                c => {
                    let _ = write!(out, "\\U{:08x}", c as u32);
                }
            }
        }
        let consumed = valid.len();
        for b in &rest[consumed..consumed + invalid_len] {
            let _ = write!(out, "\\x{b:02x}");
        }
        rest = &rest[consumed + invalid_len..];
    }
    out
}

/// Go's `strconv.Unquote("\"" + s + "\"")`, returning raw bytes.
pub fn go_unquote(s: &str) -> std::result::Result<Vec<u8>, String> {
    let err = |why: &str| format!("cannot unquote name {s:?}: {why}");
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    let hex_val = |c: u8| -> Option<u32> { (c as char).to_digit(16) };
    while i < b.len() {
        let c = b[i];
        if c == b'"' {
            return Err(err("unescaped quote"));
        }
        if c == b'\n' {
            return Err(err("newline"));
        }
        if c != b'\\' {
            out.push(c);
            i += 1;
            continue;
        }
        let Some(&e) = b.get(i + 1) else {
            return Err(err("trailing backslash"));
        };
        i += 2;
        match e {
            b'a' => out.push(7),
            b'b' => out.push(8),
            b'f' => out.push(12),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(11),
            b'\\' => out.push(b'\\'),
            b'"' => out.push(b'"'),
            b'x' | b'u' | b'U' => {
                let n = match e {
                    b'x' => 2,
                    b'u' => 4,
                    _ => 8,
                };
                let digits = b.get(i..i + n).ok_or_else(|| err("short escape"))?;
                let mut v: u32 = 0;
                for d in digits {
                    v = v * 16 + hex_val(*d).ok_or_else(|| err("bad hex digit"))?;
                }
                i += n;
                if e == b'x' {
                    out.push(v as u8);
                } else {
                    let ch = char::from_u32(v).ok_or_else(|| err("invalid code point"))?;
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                }
            }
            b'0'..=b'7' => {
                let digits = b
                    .get(i - 1..i + 2)
                    .ok_or_else(|| err("short octal escape"))?;
                let mut v: u32 = 0;
                for d in digits {
                    if !(b'0'..=b'7').contains(d) {
                        return Err(err("bad octal digit"));
                    }
                    v = v * 8 + u32::from(d - b'0');
                }
                if v > 255 {
                    return Err(err("octal escape above 255"));
                }
                out.push(v as u8);
                i += 2;
            }
            _ => return Err(err("unknown escape")),
        }
    }
    Ok(out)
}

/// One entry of a tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// File name (any bytes but `/` and NUL).
    pub name: OsString,
    /// Kind.
    pub node_type: NodeType,
    /// Go `os.FileMode`.
    pub mode: u32,
    /// Modification time.
    pub mtime: DateTime<Utc>,
    /// Access time.
    pub atime: DateTime<Utc>,
    /// Status change time.
    pub ctime: DateTime<Utc>,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Owner name.
    pub user: String,
    /// Group name.
    pub group: String,
    /// Inode number.
    pub inode: u64,
    /// `st_dev` of the file system.
    pub device_id: u64,
    /// Size (files only).
    pub size: u64,
    /// Hard-link count.
    pub links: u64,
    /// Symlink target.
    pub link_target: Option<OsString>,
    /// Extended attributes.
    pub extended_attributes: Vec<ExtendedAttribute>,
    /// `st_rdev` for devices.
    pub device: u64,
    /// Data blob ids of a file, in order.
    pub content: Option<Vec<Id>>,
    /// Tree id of a directory.
    pub subtree: Option<Id>,
    /// An error recorded while reading the file.
    pub error: String,
}

impl Node {
    /// A node of this name and type with everything else empty.
    pub fn new(name: impl Into<OsString>, node_type: NodeType) -> Self {
        let zero = go_zero_time();
        Node {
            name: name.into(),
            node_type,
            mode: 0,
            mtime: zero,
            atime: zero,
            ctime: zero,
            uid: 0,
            gid: 0,
            user: String::new(),
            group: String::new(),
            inode: 0,
            device_id: 0,
            size: 0,
            links: 0,
            link_target: None,
            extended_attributes: Vec::new(),
            device: 0,
            content: None,
            subtree: None,
            error: String::new(),
        }
    }

    /// True when the name is safe to use as one path component.
    pub fn has_safe_name(&self) -> bool {
        let b = self.name.as_bytes();
        !b.is_empty() && b != b"." && b != b".." && !b.contains(&b'/') && !b.contains(&0)
    }
}

#[derive(Serialize)]
struct NodeOut<'a> {
    name: String,
    #[serde(rename = "type")]
    node_type: &'a str,
    #[serde(skip_serializing_if = "is_zero_u32")]
    mode: u32,
    mtime: String,
    atime: String,
    ctime: String,
    uid: u32,
    gid: u32,
    #[serde(skip_serializing_if = "is_empty_str")]
    user: &'a str,
    #[serde(skip_serializing_if = "is_empty_str")]
    group: &'a str,
    #[serde(skip_serializing_if = "is_zero_u64")]
    inode: u64,
    #[serde(skip_serializing_if = "is_zero_u64")]
    device_id: u64,
    #[serde(skip_serializing_if = "is_zero_u64")]
    size: u64,
    #[serde(skip_serializing_if = "is_zero_u64")]
    links: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    linktarget: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    linktarget_raw: Option<String>,
    #[serde(skip_serializing_if = "is_empty_attrs")]
    extended_attributes: &'a [ExtendedAttribute],
    #[serde(skip_serializing_if = "is_zero_u64")]
    device: u64,
    content: Option<&'a [Id]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    subtree: Option<&'a Id>,
    #[serde(skip_serializing_if = "is_empty_str")]
    error: &'a str,
}

fn is_empty_str(s: &&str) -> bool {
    s.is_empty()
}
fn is_empty_attrs(a: &&[ExtendedAttribute]) -> bool {
    a.is_empty()
}
fn is_zero_u32(v: &u32) -> bool {
    *v == 0
}
fn is_zero_u64(v: &u64) -> bool {
    *v == 0
}

#[derive(Deserialize)]
struct NodeIn {
    name: String,
    #[serde(rename = "type")]
    node_type: NodeType,
    #[serde(default)]
    mode: u32,
    #[serde(default = "go_zero_time", with = "go_time")]
    mtime: DateTime<Utc>,
    #[serde(default = "go_zero_time", with = "go_time")]
    atime: DateTime<Utc>,
    #[serde(default = "go_zero_time", with = "go_time")]
    ctime: DateTime<Utc>,
    #[serde(default)]
    uid: u32,
    #[serde(default)]
    gid: u32,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    group: Option<String>,
    #[serde(default)]
    inode: u64,
    #[serde(default)]
    device_id: u64,
    #[serde(default)]
    size: u64,
    #[serde(default)]
    links: u64,
    #[serde(default)]
    linktarget: Option<String>,
    #[serde(default)]
    linktarget_raw: Option<String>,
    #[serde(default)]
    extended_attributes: Option<Vec<ExtendedAttribute>>,
    #[serde(default)]
    device: u64,
    #[serde(default)]
    content: Option<Vec<Id>>,
    #[serde(default)]
    subtree: Option<Id>,
    #[serde(default)]
    error: Option<String>,
}

impl Serialize for Node {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let (linktarget, linktarget_raw) = match &self.link_target {
            None => (None, None),
            Some(t) => match std::str::from_utf8(t.as_bytes()) {
                Ok(utf8) if !utf8.is_empty() => (Some(utf8.to_string()), None),
                Ok(_) => (None, None),
                Err(_) => (
                    None,
                    Some(base64::engine::general_purpose::STANDARD.encode(t.as_bytes())),
                ),
            },
        };
        NodeOut {
            name: go_quote(self.name.as_bytes()),
            node_type: self.node_type.as_str(),
            mode: self.mode,
            mtime: format_go_time(&self.mtime),
            atime: format_go_time(&self.atime),
            ctime: format_go_time(&self.ctime),
            uid: self.uid,
            gid: self.gid,
            user: &self.user,
            group: &self.group,
            inode: self.inode,
            device_id: self.device_id,
            size: self.size,
            links: self.links,
            linktarget,
            linktarget_raw,
            extended_attributes: &self.extended_attributes,
            device: self.device,
            content: self.content.as_deref(),
            subtree: self.subtree.as_ref(),
            error: &self.error,
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let n = NodeIn::deserialize(d)?;
        let name = go_unquote(&n.name).map_err(serde::de::Error::custom)?;
        let link_target = match (n.linktarget_raw, n.linktarget) {
            (Some(raw), _) => Some(OsString::from_vec(
                base64::engine::general_purpose::STANDARD
                    .decode(raw.as_bytes())
                    .map_err(serde::de::Error::custom)?,
            )),
            (None, Some(t)) => Some(OsString::from(t)),
            (None, None) => None,
        };
        Ok(Node {
            name: OsString::from_vec(name),
            node_type: n.node_type,
            mode: n.mode,
            mtime: n.mtime,
            atime: n.atime,
            ctime: n.ctime,
            uid: n.uid,
            gid: n.gid,
            user: n.user.unwrap_or_default(),
            group: n.group.unwrap_or_default(),
            inode: n.inode,
            device_id: n.device_id,
            size: n.size,
            links: n.links,
            link_target,
            extended_attributes: n.extended_attributes.unwrap_or_default(),
            device: n.device,
            content: n.content,
            subtree: n.subtree,
            error: n.error.unwrap_or_default(),
        })
    }
}

/// A directory listing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tree {
    /// The entries, sorted by name.
    #[serde(deserialize_with = "nodes_or_null", default)]
    pub nodes: Vec<Node>,
}

fn nodes_or_null<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Vec<Node>, D::Error> {
    Ok(Option::<Vec<Node>>::deserialize(d)?.unwrap_or_default())
}

impl Tree {
    /// A tree of these nodes, sorted by name.
    pub fn from_nodes(mut nodes: Vec<Node>) -> Self {
        nodes.sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
        Tree { nodes }
    }

    /// The blob bytes: JSON plus the newline restic appends.
    pub fn to_blob(&self) -> Result<Vec<u8>> {
        let mut v = serde_json::to_vec(self)
            .map_err(|e| Error::Aborted(format!("cannot encode tree: {e}")))?;
        v.push(b'\n');
        Ok(v)
    }

    /// Parses a tree blob; `what` names it in errors.
    pub fn from_blob(data: &[u8], what: &str) -> Result<Tree> {
        serde_json::from_slice(data)
            .map_err(|e| Error::corrupt(what, format!("not a valid tree: {e}")))
    }

    /// The node with this name.
    pub fn find(&self, name: &OsStr) -> Option<&Node> {
        let key = name.as_bytes();
        self.nodes
            .binary_search_by(|n| n.name.as_bytes().cmp(key))
            .ok()
            .map(|i| &self.nodes[i])
            .or_else(|| self.nodes.iter().find(|n| n.name.as_bytes() == key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_matches_go() {
        assert_eq!(go_quote(b"plain name.txt"), "plain name.txt");
        assert_eq!(go_quote("ünï cödé 日本".as_bytes()), "ünï cödé 日本");
        assert_eq!(go_quote(b"a\"b\\c"), "a\\\"b\\\\c");
        assert_eq!(go_quote(b"tab\there\n"), "tab\\there\\n");
        assert_eq!(go_quote(b"\x01\x7f"), "\\x01\\x7f");
        assert_eq!(go_quote(b"bad\xffutf8"), "bad\\xffutf8");
        assert_eq!(go_quote("nb\u{a0}sp".as_bytes()), "nb\\u00a0sp");
        for s in [
            &b"plain"[..],
            b"a\"b\\c",
            b"\x00\x01\xff\xfe",
            "ünï 日本 \u{200b}".as_bytes(),
            b"\t\n\r\x0b\x0c\x07\x08",
        ] {
            assert_eq!(go_unquote(&go_quote(s)).unwrap(), s);
        }
        assert_eq!(go_unquote("\\101\\u00e9").unwrap(), "Aé".as_bytes());
        assert!(go_unquote("a\"b").is_err());
        assert!(go_unquote("a\\").is_err());
        assert!(go_unquote("\\q").is_err());
    }

    #[test]
    fn modes() {
        assert_eq!(go_mode_from_unix(0o040755), GO_MODE_DIR | 0o755);
        assert_eq!(go_mode_from_unix(0o120777), GO_MODE_SYMLINK | 0o777);
        assert_eq!(go_mode_from_unix(0o100644), 0o644);
        assert_eq!(go_mode_from_unix(0o104755), GO_MODE_SETUID | 0o755);
        assert_eq!(
            unix_mode_from_go(GO_MODE_DIR | GO_MODE_STICKY | 0o777),
            0o1777
        );
    }

    #[test]
    fn node_json_round_trip() {
        let mut n = Node::new("a \"b\"", NodeType::File);
        n.mode = 0o644;
        n.mtime = parse_go_time("2014-12-22T14:47:59.912418701+01:00").unwrap();
        n.content = Some(vec![]);
        let tree = Tree::from_nodes(vec![n.clone()]);
        let blob = tree.to_blob().unwrap();
        assert_eq!(blob.last(), Some(&b'\n'));
        let text = String::from_utf8(blob.clone()).unwrap();
        assert!(text.contains(r#""name":"a \\\"b\\\"""#), "{text}");
        assert!(text.contains(r#""content":[]"#), "{text}");
        assert!(text.contains("2014-12-22T13:47:59.912418701Z"), "{text}");
        assert!(!text.contains("subtree"));
        let back = Tree::from_blob(&blob, "t").unwrap();
        assert_eq!(back, tree);

        let mut l = Node::new("l", NodeType::Symlink);
        l.link_target = Some(OsString::from_vec(b"\xff/x".to_vec()));
        let t = Tree::from_nodes(vec![l]);
        let back = Tree::from_blob(&t.to_blob().unwrap(), "t").unwrap();
        assert_eq!(back, t);

        // A node as restic writes it.
        let restic = r#"{"nodes":[{"name":"testdata","type":"dir","mode":2147484141,"mtime":"2014-12-22T14:47:59.912418701+01:00","atime":"2014-12-06T17:49:21.748468803+01:00","ctime":"2014-12-22T14:47:59.912418701+01:00","uid":1000,"gid":100,"user":"fd0","inode":409704562,"content":null,"subtree":"b26e315b0988ddcd1cee64c351d13a100fedbc9fdbb144a67d1b765ab280b4dc","future_field":1}]}"#;
        let t = Tree::from_blob(restic.as_bytes(), "t").unwrap();
        assert_eq!(t.nodes[0].node_type, NodeType::Dir);
        assert_eq!(t.nodes[0].mode, GO_MODE_DIR | 0o755);
        assert!(t.nodes[0].subtree.is_some());
    }
}
