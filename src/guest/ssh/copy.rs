//! Copies between the host and a guest, as tar streams over an exec channel
//! (any guest with `tar` and a POSIX shell works).
//!
//! Semantics follow `cp`: copying onto an existing folder puts the copy
//! *inside* it (`DIR/<name>`); an existing file is replaced only by a file
//! (atomically, by rename); an existing folder is never replaced or merged
//! into; nothing else is deleted. Both directions stage the copy next to its
//! destination and move it into place only when it is complete.
//!
//! What a guest sends is untrusted: only regular files and folders are
//! written on the host (symlinks, hard links and devices are skipped and
//! reported), paths must stay inside the copy, set-id bits are dropped, and
//! every copy has a time limit and a byte limit ([`CopyLimits`]).

use std::fs::{self, File, OpenOptions};
use std::io::{self, ErrorKind, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use super::{Connection, SshError, Streams, quote, split_remote};

/// Environment variable: seconds a copy may take.
pub const ENV_TIMEOUT: &str = "LAGO_COPY_TIMEOUT";
/// Environment variable: bytes a copy may move (qemu-img size syntax: `2G`).
pub const ENV_MAX_BYTES: &str = "LAGO_COPY_MAX_BYTES";
/// Environment variable: bytes each failure artifact may have.
pub const ENV_ARTIFACT_MAX_BYTES: &str = "LAGO_ARTIFACT_MAX_BYTES";

/// Exit code of the guest-side script when it refuses to replace something.
const REFUSED: i32 = 65;
/// Most stderr kept from the guest's tar.
const STDERR_KEPT: usize = 16 << 10;

/// Bounds of one copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopyLimits {
    /// Time the whole copy may take (default 10 minutes).
    pub timeout: Duration,
    /// Bytes the copy may move (the tar stream; default 1 GiB).
    pub max_bytes: u64,
    /// The environment variable that sets `max_bytes` (named in errors).
    pub(crate) bytes_var: &'static str,
}

impl Default for CopyLimits {
    fn default() -> Self {
        CopyLimits {
            timeout: Duration::from_secs(600),
            max_bytes: 1 << 30,
            bytes_var: ENV_MAX_BYTES,
        }
    }
}

impl CopyLimits {
    /// Limits with this timeout and byte cap.
    pub fn new(timeout: Duration, max_bytes: u64) -> Self {
        CopyLimits {
            timeout,
            max_bytes,
            ..CopyLimits::default()
        }
    }

    /// The defaults, overridden by `LAGO_COPY_TIMEOUT` (seconds) and
    /// `LAGO_COPY_MAX_BYTES` (`512M`, `2G`, bytes). A malformed value is an error.
    pub fn from_env() -> Result<Self, SshError> {
        let mut l = CopyLimits::default();
        if let Some(t) = env_setting(ENV_TIMEOUT, parse_secs)? {
            l.timeout = t;
        }
        if let Some(b) = env_setting(ENV_MAX_BYTES, lago_config::parse_size)? {
            l.max_bytes = b;
        }
        Ok(l)
    }

    /// The limits of each failure artifact: 64 MiB (`LAGO_ARTIFACT_MAX_BYTES`),
    /// and the copy timeout (`LAGO_COPY_TIMEOUT`).
    pub fn artifacts_from_env() -> Result<Self, SshError> {
        let mut l = CopyLimits::from_env()?;
        l.max_bytes = env_setting(ENV_ARTIFACT_MAX_BYTES, lago_config::parse_size)?.unwrap_or(64 << 20);
        l.bytes_var = ENV_ARTIFACT_MAX_BYTES;
        Ok(l)
    }
}

/// Longest copy timeout accepted: 30 days.
const MAX_TIMEOUT_SECS: u64 = 30 * 24 * 3600;

fn parse_secs(s: &str) -> Result<Duration, String> {
    match s.trim().parse::<u64>() {
        Ok(n) if (1..=MAX_TIMEOUT_SECS).contains(&n) => Ok(Duration::from_secs(n)),
        _ => Err(format!(
            "expected a whole number of seconds from 1 to {MAX_TIMEOUT_SECS}, found {s:?}"
        )),
    }
}

fn env_setting<T>(name: &'static str, parse: impl Fn(&str) -> Result<T, String>) -> Result<Option<T>, SshError> {
    match std::env::var(name) {
        Ok(v) if v.trim().is_empty() => Ok(None),
        Ok(v) => parse(&v).map(Some).map_err(|why| SshError::Setting {
            name,
            value: v.clone(),
            expected: why,
        }),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(v)) => Err(SshError::Setting {
            name,
            value: v.to_string_lossy().into_owned(),
            expected: "UTF-8 text".into(),
        }),
    }
}

/// Something a copy did not write, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Skipped {
    /// Its path inside the copy.
    pub path: String,
    /// What it is (`symlink`, `hard link`, `device`, …).
    pub kind: String,
}

/// What a copy did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct CopyReport {
    /// Where the copy is now (a host path, or a guest path).
    pub destination: String,
    /// Regular files written.
    pub files: u64,
    /// Folders written.
    pub dirs: u64,
    /// Bytes of file content written.
    pub bytes: u64,
    /// Entries not written (only regular files and folders are); the first 100.
    pub skipped: Vec<Skipped>,
    /// How many more entries were skipped than `skipped` lists.
    pub skipped_more: u64,
}

/// A writer that fails once `left` bytes have been written.
struct Capped<W> {
    inner: W,
    left: u64,
    exceeded: bool,
}

impl<W: Write> Write for Capped<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.len() as u64 > self.left {
            self.exceeded = true;
            return Err(io::Error::other("byte limit of the copy reached"));
        }
        let n = self.inner.write(buf)?;
        self.left -= n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Most skipped entries listed one by one (the rest are counted).
const SKIPPED_LISTED: usize = 100;

impl CopyReport {
    fn skip(&mut self, path: String, kind: &str) {
        if self.skipped.len() < SKIPPED_LISTED {
            // Guest-chosen names: shortened, and shown with escapes where printed.
            let path: String = path.chars().take(256).collect();
            self.skipped.push(Skipped {
                path,
                kind: kind.to_owned(),
            });
        } else {
            self.skipped_more += 1;
        }
    }
}

/// Keeps the first `STDERR_KEPT` bytes, drops the rest.
#[derive(Default)]
struct Head(Vec<u8>);

impl Write for Head {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = STDERR_KEPT.saturating_sub(self.0.len());
        self.0.extend_from_slice(&buf[..buf.len().min(room)]);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Head {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0).trim().to_owned()
    }
}

/// Where a copy named `name` lands when asked to go to `dest`: inside it
/// when it is an existing folder (or a symlink to one), else at `dest`.
pub(crate) fn landing(dest: &Path, name: &str) -> PathBuf {
    if dest.is_dir() {
        dest.join(name)
    } else {
        dest.to_path_buf()
    }
}

/// The guest-side script of a copy to the guest: where the copy lands (like
/// cp), refusal to replace a folder or a non-folder by a folder, staging in
/// a temporary folder beside the target, then a rename into place.
fn receive_script(dst: &str, into: bool, name: &str, is_dir: bool) -> String {
    format!(
        r#"set -e
dst={dst}; name={name}; kind={kind}; into={into}
if [ -d "$dst" ] || [ "$into" = 1 ]; then mkdir -p "$dst"; target="${{dst%/}}/$name"; else mkdir -p "$(dirname "$dst")"; target="$dst"; fi
if [ -d "$target" ] && [ ! -L "$target" ]; then echo "$target is an existing folder: lago does not replace or merge folders" >&2; exit {REFUSED}; fi
if [ "$kind" = dir ] && {{ [ -e "$target" ] || [ -L "$target" ]; }}; then echo "$target exists and is not a folder: a folder does not replace it" >&2; exit {REFUSED}; fi
tmp=$(mktemp -d "$(dirname "$target")/.lago-copy.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
tar -x -o -f - -C "$tmp"
if [ -L "$target" ]; then rm -f "$target"; fi
mv -f "$tmp/$name" "$target"
echo "$target""#,
        dst = quote(dst),
        name = quote(name),
        kind = if is_dir { "dir" } else { "file" },
        into = u8::from(into),
    )
}

impl Connection {
    fn copy_error(&self, path: &str, reason: impl Into<String>) -> SshError {
        SshError::Copy {
            vm: self.target().vm.clone(),
            path: path.to_owned(),
            reason: reason.into(),
        }
    }

    fn copy_io(&self, path: &str, action: &'static str, local: &Path) -> impl FnOnce(io::Error) -> SshError + use<> {
        let (vm, path, local) = (self.target().vm.clone(), path.to_owned(), local.to_path_buf());
        move |source| SshError::CopyIo {
            vm,
            path,
            action,
            local,
            source,
        }
    }

    fn too_large(&self, path: &str, limits: &CopyLimits) -> SshError {
        SshError::CopyTooLarge {
            vm: self.target().vm.clone(),
            path: path.to_owned(),
            limit: limits.max_bytes,
            env_var: limits.bytes_var,
        }
    }

    /// Copies the local file or folder `local` to the guest: onto `remote`,
    /// or inside it when it is an existing folder (or ends with `/`).
    pub fn copy_to(&self, local: &Path, remote: &str, limits: &CopyLimits) -> Result<CopyReport, SshError> {
        let shown = local.display().to_string();
        if !remote.starts_with('/') {
            return Err(self.copy_error(
                &shown,
                format!("expected an absolute guest destination (starting with `/`), found {remote:?}"),
            ));
        }
        let meta = fs::metadata(local).map_err(self.copy_io(&shown, "read", local))?;
        if !meta.is_dir() && !meta.is_file() {
            return Err(self.copy_error(&shown, "only files and folders are copied"));
        }
        let abs = std::path::absolute(local).map_err(self.copy_io(&shown, "resolve", local))?;
        let name = abs
            .components()
            .next_back()
            .and_then(|c| match c {
                Component::Normal(n) => n.to_str().map(str::to_owned),
                _ => None,
            })
            .ok_or_else(|| self.copy_error(&shown, "expected a path with a UTF-8 file name"))?;
        let into = remote.ends_with('/');
        let dst = match remote.trim_end_matches('/') {
            "" => "/",
            d => d,
        };

        // Pack into a spool file (not memory), within the byte limit.
        let spool = tempfile::tempfile().map_err(self.copy_io(&shown, "create a spool file for", local))?;
        let mut report = CopyReport::default();
        let mut builder = tar::Builder::new(Capped {
            inner: spool,
            left: limits.max_bytes,
            exceeded: false,
        });
        builder.follow_symlinks(false);
        // Plain entries only: busybox tar cannot read GNU sparse ones.
        builder.sparse(false);
        if let Err(e) = pack(&mut builder, local, &name, meta.is_dir(), &mut report).and_then(|()| builder.finish()) {
            return Err(if builder.get_ref().exceeded {
                self.too_large(&shown, limits)
            } else {
                self.copy_io(&shown, "pack", local)(e)
            });
        }
        let mut spool = builder.into_inner().map_err(self.copy_io(&shown, "pack", local))?.inner;
        spool
            .seek(SeekFrom::Start(0))
            .map_err(self.copy_io(&shown, "read the spool file of", local))?;

        let mut out = Head::default();
        let mut err = Head::default();
        let code = self.exec_streams(
            &receive_script(dst, into, &name, meta.is_dir()),
            &mut Streams {
                stdin: &mut spool,
                out: &mut out,
                err: &mut err,
                interrupt: None,
            },
            Some(limits.timeout),
        )?;
        match code {
            0 => {}
            REFUSED => return Err(self.copy_error(&shown, err.text())),
            c => return Err(self.copy_error(&shown, format!("the guest's tar failed (exit {c}): {}", err.text()))),
        }
        // The script's last word is where the copy went: without it, the
        // copy did not finish (no exit status also reads as 0).
        report.destination = out.text();
        if report.destination.is_empty() {
            return Err(self.copy_error(&shown, "the guest did not confirm the copy (the session ended early?)"));
        }
        log_skipped(&self.target().vm, &shown, &report);
        Ok(report)
    }

    /// Copies the guest's file or folder `remote` to the host: onto `local`,
    /// or inside it when it is an existing folder.
    pub fn copy_from(&self, remote: &str, local: &Path, limits: &CopyLimits) -> Result<CopyReport, SshError> {
        let (parent, name) = split_remote(remote)
            .ok_or_else(|| self.copy_error(remote, "expected an absolute guest path (starting with `/`)"))?;
        let target = landing(local, &name);
        let dest_parent = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if let Ok(m) = fs::symlink_metadata(&target)
            && m.is_dir()
        {
            return Err(self.copy_error(
                remote,
                format!(
                    "{} is an existing folder: lago does not replace or merge folders (remove it, or copy elsewhere)",
                    target.display()
                ),
            ));
        }
        fs::create_dir_all(&dest_parent).map_err(self.copy_io(remote, "create", &dest_parent))?;

        let spool = self.spool_tar(remote, &parent, &name, &dest_parent, limits)?;
        let stage = tempfile::Builder::new()
            .prefix(".lago-copy-")
            .tempdir_in(&dest_parent)
            .map_err(self.copy_io(remote, "create a staging folder in", &dest_parent))?;
        let mut report =
            unpack(spool, stage.path(), &name).map_err(self.copy_io(remote, "unpack into", stage.path()))?;
        let staged = stage.path().join(&name);
        let staged_is_dir = match fs::symlink_metadata(&staged) {
            Ok(m) => m.is_dir(),
            Err(_) => {
                let kind = report
                    .skipped
                    .iter()
                    .find(|s| s.path == name)
                    .map(|s| s.kind.clone())
                    .unwrap_or_else(|| "missing from the guest's archive".into());
                return Err(self.copy_error(
                    remote,
                    format!("not copied: it is a {kind}; only files and folders are"),
                ));
            }
        };
        if staged_is_dir
            && let Ok(m) = fs::symlink_metadata(&target)
            && !m.is_dir()
        {
            return Err(self.copy_error(
                remote,
                format!(
                    "{} exists and is not a folder: a folder does not replace it",
                    target.display()
                ),
            ));
        }
        let placed = if staged_is_dir {
            // A folder never replaces anything, even one that appeared since the check.
            rustix::fs::renameat_with(
                rustix::fs::CWD,
                &staged,
                rustix::fs::CWD,
                &target,
                rustix::fs::RenameFlags::NOREPLACE,
            )
            .map_err(io::Error::from)
        } else {
            fs::rename(&staged, &target)
        };
        placed.map_err(self.copy_io(remote, "move the copy into place at", &target))?;
        report.destination = target.display().to_string();
        log_skipped(&self.target().vm, remote, &report);
        Ok(report)
    }

    /// Streams the guest's tar of `parent/name` into a spool file in
    /// `dest_parent`, within `limits`; the spool, read from its start, once
    /// it holds a complete archive.
    fn spool_tar(
        &self,
        remote: &str,
        parent: &str,
        name: &str,
        dest_parent: &Path,
        limits: &CopyLimits,
    ) -> Result<fs::File, SshError> {
        let spool =
            tempfile::tempfile_in(dest_parent).map_err(self.copy_io(remote, "create a spool file in", dest_parent))?;
        let mut sink = Capped {
            inner: spool,
            left: limits.max_bytes,
            exceeded: false,
        };
        let mut err = Head::default();
        // `./name`: a name starting with `-` is not a tar option.
        let cmd = format!("tar -c -f - -C {} {}", quote(parent), quote(&format!("./{name}")));
        let code = self.exec_streams(
            &cmd,
            &mut Streams {
                stdin: &mut io::empty(),
                out: &mut sink,
                err: &mut err,
                interrupt: None,
            },
            Some(limits.timeout),
        );
        match code {
            Err(_) if sink.exceeded => return Err(self.too_large(remote, limits)),
            Err(e) => return Err(e),
            Ok(0) => {}
            Ok(c) => {
                return Err(self.copy_error(
                    remote,
                    format!("not found or unreadable on the guest (tar exit {c}): {}", err.text()),
                ));
            }
        }
        let mut spool = sink.inner;
        // A complete archive ends with two zero blocks: a cut-off stream is not placed.
        if !ends_complete(&mut spool).map_err(self.copy_io(remote, "read the spool file in", dest_parent))? {
            return Err(self.copy_error(remote, "the guest's archive ended early (the session was cut?)"));
        }
        spool
            .seek(SeekFrom::Start(0))
            .map_err(self.copy_io(remote, "read the spool file in", dest_parent))?;
        Ok(spool)
    }
}

/// Whether a tar stream ends with its end-of-archive marker (two zero blocks).
fn ends_complete(f: &mut File) -> io::Result<bool> {
    let len = f.seek(SeekFrom::End(0))?;
    if len < 1024 || len % 512 != 0 {
        return Ok(false);
    }
    f.seek(SeekFrom::Start(len - 1024))?;
    let mut tail = [0u8; 1024];
    f.read_exact(&mut tail)?;
    Ok(tail.iter().all(|&b| b == 0))
}

fn log_skipped(vm: &str, what: &str, report: &CopyReport) {
    for s in &report.skipped {
        tracing::warn!(vm, copy = what, path = ?s.path, kind = %s.kind, "not copied: only regular files and folders are");
    }
    if report.skipped_more > 0 {
        tracing::warn!(
            vm,
            copy = what,
            more = report.skipped_more,
            "and more entries not copied"
        );
    }
}

/// Packs `local` as `name`: folders walked without following symlinks
/// (which are packed as symlinks); other special files are skipped.
fn pack<W: Write>(
    b: &mut tar::Builder<W>,
    local: &Path,
    name: &str,
    is_dir: bool,
    report: &mut CopyReport,
) -> io::Result<()> {
    if !is_dir {
        append_file(b, local, Path::new(name), report)?;
        return Ok(());
    }
    let mut stack = vec![(local.to_path_buf(), PathBuf::from(name))];
    while let Some((dir, rel)) = stack.pop() {
        b.append_dir(&rel, &dir)?;
        report.dirs += 1;
        let mut entries: Vec<_> = fs::read_dir(&dir)?.collect::<io::Result<_>>()?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let t = e.file_type()?;
            let path = e.path();
            let rel = rel.join(e.file_name());
            if t.is_dir() {
                stack.push((path, rel));
            } else if t.is_file() {
                append_file(b, &path, &rel, report)?;
            } else if t.is_symlink() {
                b.append_path_with_name(&path, &rel)?;
            } else {
                report.skip(rel.display().to_string(), "special file");
            }
        }
    }
    Ok(())
}

/// Appends the file at `path` as `rel`, exactly as long as it was when
/// opened (a file that grows meanwhile cannot break the stream; one that
/// shrinks is an error).
fn append_file<W: Write>(b: &mut tar::Builder<W>, path: &Path, rel: &Path, report: &mut CopyReport) -> io::Result<()> {
    let f = File::open(path)?;
    let meta = f.metadata()?;
    let mut h = tar::Header::new_gnu();
    h.set_metadata(&meta);
    b.append_data(&mut h, rel, f.take(meta.len()))?;
    report.files += 1;
    report.bytes += meta.len();
    Ok(())
}

/// A tar path as safe relative components inside the copy named `name`
/// (`./` dropped), or `None` when it would leave it.
fn inside(path: &Path, name: &str) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::Normal(p) => out.push(p),
            Component::RootDir | Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    (out.components().next() == Some(Component::Normal(name.as_ref()))).then_some(out)
}

fn kind_name(t: tar::EntryType) -> &'static str {
    match t {
        tar::EntryType::Symlink => "symlink",
        tar::EntryType::Link => "hard link",
        tar::EntryType::Char => "character device",
        tar::EntryType::Block => "block device",
        tar::EntryType::Fifo => "fifo",
        _ => "special entry",
    }
}

/// Unpacks a tar stream from the guest into `root`: regular files and
/// folders only, all inside `root/name`, set-id bits dropped, files and
/// folders left readable and writable by their owner.
fn unpack(reader: impl Read, root: &Path, name: &str) -> io::Result<CopyReport> {
    let mut report = CopyReport::default();
    let mut dirs: Vec<(PathBuf, u32)> = Vec::new();
    let mut archive = tar::Archive::new(reader);
    for entry in archive.entries()? {
        let mut entry = entry?;
        let t = entry.header().entry_type();
        if matches!(
            t,
            tar::EntryType::XGlobalHeader
                | tar::EntryType::XHeader
                | tar::EntryType::GNULongName
                | tar::EntryType::GNULongLink
        ) {
            continue;
        }
        let raw = entry.path()?.into_owned();
        let Some(rel) = inside(&raw, name) else {
            report.skip(raw.display().to_string(), "path outside the copy");
            continue;
        };
        let shown = rel.display().to_string();
        // No set-id bits, nothing writable by others: the guest does not choose who may change host files.
        let mode = entry.header().mode().unwrap_or(0o644) & 0o755;
        let dest = root.join(&rel);
        match t {
            tar::EntryType::Directory => {
                fs::create_dir_all(&dest)?;
                dirs.push((dest, mode | 0o700));
                report.dirs += 1;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                if let Some(p) = dest.parent() {
                    fs::create_dir_all(p)?;
                }
                let mut f = match OpenOptions::new().write(true).create_new(true).mode(0o600).open(&dest) {
                    Ok(f) => f,
                    Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                        report.skip(shown, "duplicate entry");
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                report.bytes += io::copy(&mut entry, &mut f)?;
                f.set_permissions(fs::Permissions::from_mode(mode | 0o600))?;
                report.files += 1;
            }
            other => report.skip(shown, kind_name(other)),
        }
    }
    // Folder modes last (deepest first), so that a read-only folder does not
    // stop its own files from being written.
    for (d, mode) in dirs.iter().rev() {
        fs::set_permissions(d, fs::Permissions::from_mode(*mode))?;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tar stream as a hostile guest might send it.
    fn archive(entries: &[(&str, tar::EntryType, &[u8], Option<&str>)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, t, data, link) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*t);
            h.set_size(data.len() as u64);
            h.set_mode(0o4755);
            if let Some(l) = link {
                h.set_link_name(l).unwrap();
            }
            // Raw names: `set_path` refuses `..`, a guest need not.
            let name = h.as_old_mut().name.as_mut();
            name[..path.len()].copy_from_slice(path.as_bytes());
            h.set_cksum();
            b.append(&h, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn only_files_and_folders_inside_the_copy_are_written() {
        use tar::EntryType as T;
        let tmp = tempfile::tempdir().unwrap();
        let data = archive(&[
            ("./tree/", T::Directory, b"", None),
            ("./tree/a.txt", T::Regular, b"alpha", None),
            ("./tree/link", T::Symlink, b"", Some("/etc/passwd")),
            ("./tree/hard", T::Link, b"", Some("tree/a.txt")),
            ("./tree/dev", T::Char, b"", None),
            ("./tree/../../escape", T::Regular, b"x", None),
            ("/abs", T::Regular, b"x", None),
            ("other/file", T::Regular, b"x", None),
            ("./tree/sub/deep.txt", T::Regular, b"deep", None),
            ("./tree/a.txt", T::Regular, b"again", None),
        ]);
        let r = unpack(&data[..], tmp.path(), "tree").unwrap();
        assert_eq!(fs::read_to_string(tmp.path().join("tree/a.txt")).unwrap(), "alpha");
        assert_eq!(
            fs::read_to_string(tmp.path().join("tree/sub/deep.txt")).unwrap(),
            "deep"
        );
        assert!(fs::symlink_metadata(tmp.path().join("tree/link")).is_err());
        assert!(!tmp.path().join("escape").exists() && !tmp.path().parent().unwrap().join("escape").exists());
        assert!(!tmp.path().join("other").exists());
        let kinds: Vec<(&str, &str)> = r.skipped.iter().map(|s| (s.path.as_str(), s.kind.as_str())).collect();
        assert_eq!(
            kinds,
            [
                ("tree/link", "symlink"),
                ("tree/hard", "hard link"),
                ("tree/dev", "character device"),
                ("./tree/../../escape", "path outside the copy"),
                ("/abs", "path outside the copy"),
                ("other/file", "path outside the copy"),
                ("tree/a.txt", "duplicate entry"),
            ]
        );
        assert_eq!((r.files, r.dirs, r.bytes), (2, 1, 9));
        // Set-id bits are dropped.
        let mode = fs::metadata(tmp.path().join("tree/a.txt"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, 0o755);
    }

    #[test]
    fn a_read_only_guest_folder_still_unpacks() {
        use tar::EntryType as T;
        let tmp = tempfile::tempdir().unwrap();
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(T::Directory);
        h.set_mode(0o555);
        h.set_size(0);
        b.append_data(&mut h, "ro", &b""[..]).unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(T::Regular);
        h.set_mode(0o444);
        h.set_size(2);
        b.append_data(&mut h, "ro/f", &b"hi"[..]).unwrap();
        let data = b.into_inner().unwrap();
        unpack(&data[..], tmp.path(), "ro").unwrap();
        assert_eq!(fs::read_to_string(tmp.path().join("ro/f")).unwrap(), "hi");
        let mode = fs::metadata(tmp.path().join("ro")).unwrap().permissions().mode();
        assert_eq!(
            mode & 0o777,
            0o755,
            "owner keeps write access, so the copy can be removed"
        );
    }

    #[test]
    fn a_copy_lands_inside_an_existing_folder() {
        let tmp = tempfile::tempdir().unwrap();
        assert_eq!(landing(tmp.path(), "hostname"), tmp.path().join("hostname"));
        let f = tmp.path().join("file");
        assert_eq!(landing(&f, "hostname"), f);
        fs::write(&f, "x").unwrap();
        assert_eq!(landing(&f, "hostname"), f);
    }

    #[test]
    fn the_byte_cap_stops_a_writer() {
        let mut c = Capped {
            inner: Vec::new(),
            left: 10,
            exceeded: false,
        };
        c.write_all(b"0123456789").unwrap();
        assert!(c.write_all(b"x").is_err());
        assert!(c.exceeded);
        assert_eq!(c.inner.len(), 10);
    }

    #[test]
    fn limits_come_from_the_environment_or_fail_clearly() {
        assert_eq!(parse_secs("30"), Ok(Duration::from_secs(30)));
        assert!(parse_secs("0").is_err() && parse_secs("soon").is_err());
        assert!(parse_secs("10000000000000000000").is_err(), "no deadline overflow");
        let d = CopyLimits::default();
        assert_eq!((d.timeout, d.max_bytes), (Duration::from_secs(600), 1 << 30));
    }

    #[test]
    fn the_receive_script_quotes_everything() {
        let s = receive_script("/tmp/it's here", false, "-rf", true);
        assert!(
            s.contains(r"dst='/tmp/it'\''s here'; name=-rf; kind=dir; into=0"),
            "{s}"
        );
        let s = receive_script("/", true, "a b", false);
        assert!(s.contains("dst=/; name='a b'; kind=file; into=1"), "{s}");
    }
}
