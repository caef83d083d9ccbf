//! Reading what is on disk: walking a runbooks folder, and reading one file, both with limits.
//!
//! A runbooks folder holds whatever a checkout, a volume mount or a colleague put there, and
//! issue 13 found what that can be: links `a -> .` and `b -> .` made the walk never end (each
//! path through the links was walked again), a named pipe `x.yaml` blocked the read forever,
//! and a link `x.yaml -> /dev/zero` was read until memory ran out. So a walk reads each real
//! folder once, whatever links lead to it; it reads only regular files, saying which paths it
//! skipped and why; and no file is read past [`MAX_FILE_BYTES`].
//!
//! A file the user names (on the command line, or as a scenario in a test file) is read
//! whatever it is, so `runbook validate <(generate)` and `/dev/stdin` still work; the size
//! limit holds for it too.

use std::collections::{HashSet, VecDeque};
use std::fs::{File, Metadata};
use std::io::Read as _;
use std::path::{Path, PathBuf};

use crate::diagnostic::{Code, Diagnostic, Diagnostics};
use crate::source::{Position, SourceFile, Span};

/// The largest file the engine reads. The largest runbook we ship is under 10 KB, and a
/// generated one with hundreds of steps under 100 KB; past 4 MiB a file is not a runbook, a
/// test or a scenario someone wrote, and reading it whole would only cost memory.
pub const MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// How the engine came to read a path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Named by the user: read whatever it is, up to the size limit.
    Named,
    /// Found by walking a folder: read only if it is a regular file. It is opened without
    /// waiting (a named pipe put in its place since the walk would otherwise block the open)
    /// and its type checked on the opened file.
    Found,
}

/// What a walk meets in a folder, for the caller to say whether it wants it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    File,
    Folder,
}

/// Walks the folder `root`, returning the files `wanted(folder, path, kind)` keeps, sorted; it
/// descends into the folders `wanted` keeps. Each real folder is walked once: a link to a
/// folder already walked (or walked later under its own name) is skipped with a warning, and
/// links are followed only after every real folder, so files are named by their real paths
/// where they have one. Entries `wanted` keeps that are neither files nor folders (named pipes,
/// sockets, devices) are skipped with a warning. An entry whose type cannot be read (a link to
/// nothing) is kept as a file, so reading it reports why.
pub fn walk(
    root: &Path,
    mut wanted: impl FnMut(&Path, &Path, Kind) -> bool,
    diagnostics: &mut Diagnostics,
) -> Vec<PathBuf> {
    let mut walked: HashSet<PathBuf> = HashSet::new();
    let mut files = Vec::new();
    let mut folders = vec![root.to_path_buf()];
    let mut links: VecDeque<PathBuf> = VecDeque::new();
    if let Ok(real) = std::fs::canonicalize(root) {
        walked.insert(real);
    }
    loop {
        while let Some(folder) = folders.pop() {
            let entries = match std::fs::read_dir(&folder) {
                Ok(entries) => entries,
                Err(error) => {
                    diagnostics.push(file_error(
                        &folder,
                        format!("cannot read the folder: {error}"),
                    ));
                    continue;
                }
            };
            let mut entries: Vec<_> = entries.flatten().collect();
            entries.sort_by_key(|entry| entry.file_name());
            for entry in entries {
                let path = entry.path();
                let Ok(own_type) = entry.file_type() else {
                    if wanted(&folder, &path, Kind::File) {
                        files.push(path);
                    }
                    continue;
                };
                let link = own_type.is_symlink();
                let target = if link {
                    std::fs::metadata(&path).ok()
                } else {
                    entry.metadata().ok()
                };
                let Some(target) = target else {
                    if wanted(&folder, &path, Kind::File) {
                        files.push(path);
                    }
                    continue;
                };
                if target.is_dir() {
                    if !wanted(&folder, &path, Kind::Folder) {
                        continue;
                    }
                    if link {
                        links.push_back(path);
                    } else {
                        if let Ok(real) = std::fs::canonicalize(&path) {
                            walked.insert(real);
                        }
                        folders.push(path);
                    }
                } else if wanted(&folder, &path, Kind::File) {
                    if target.is_file() {
                        files.push(path);
                    } else {
                        let what = describe(&target);
                        let message = if link {
                            format!("skipped: a link to {what}, not to a regular file")
                        } else {
                            format!("skipped: {what}, not a regular file")
                        };
                        diagnostics.push(skipped(&path, message));
                    }
                }
            }
        }
        let Some(link) = links.pop_front() else {
            break;
        };
        match std::fs::canonicalize(&link) {
            Ok(real) if walked.contains(&real) => diagnostics.push(skipped(
                &link,
                format!(
                    "skipped: links to the folder {}, which is read already",
                    real.display()
                ),
            )),
            Ok(real) => {
                walked.insert(real);
                folders.push(link);
            }
            Err(error) => diagnostics.push(file_error(
                &link,
                format!("cannot read the folder: {error}"),
            )),
        }
    }
    files.sort();
    files
}

/// Reads the UTF-8 text of `path`, refusing what [`Origin`] says not to read and anything
/// longer than [`MAX_FILE_BYTES`]. The error is a diagnostic naming the file.
pub fn read_text(path: &Path, origin: Origin) -> Result<String, Diagnostic> {
    let cannot = |error: std::io::Error| file_error(path, format!("cannot read the file: {error}"));
    let file = open(path, origin).map_err(cannot)?;
    let metadata = file.metadata().map_err(cannot)?;
    if origin == Origin::Found && !metadata.is_file() {
        return Err(skipped(
            path,
            format!("skipped: {}, not a regular file", describe(&metadata)),
        ));
    }
    if metadata.is_file() && metadata.len() > MAX_FILE_BYTES {
        return Err(too_large(path, Some(metadata.len())));
    }
    // The length is only a hint: the file may grow, and a device or a pipe has none.
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(cannot)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(too_large(path, None));
    }
    String::from_utf8(bytes).map_err(|_| file_error(path, "the file is not valid UTF-8".into()))
}

fn open(path: &Path, origin: Origin) -> std::io::Result<File> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    if origin == Origin::Found {
        use std::os::unix::fs::OpenOptionsExt as _;
        // Opening a named pipe for reading waits for a writer, unless told not to; a regular
        // file reads the same either way.
        options.custom_flags(libc::O_NONBLOCK);
    }
    options.open(path)
}

/// What a path that is not a regular file or a folder is, for messages.
fn describe(metadata: &Metadata) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt as _;
        let kind = metadata.file_type();
        if kind.is_fifo() {
            return "a named pipe";
        }
        if kind.is_socket() {
            return "a socket";
        }
        if kind.is_char_device() || kind.is_block_device() {
            return "a device";
        }
    }
    if metadata.is_dir() {
        "a folder"
    } else {
        "not a file"
    }
}

/// `bytes`: the file's length, when it has one.
fn too_large(path: &Path, bytes: Option<u64>) -> Diagnostic {
    let limit = MAX_FILE_BYTES / (1024 * 1024);
    let message = match bytes {
        Some(bytes) => {
            format!("the file is {bytes} bytes, more than the {limit} MiB the engine reads")
        }
        None => format!("the file is longer than the {limit} MiB the engine reads"),
    };
    Diagnostic::error(
        Code::FileTooLarge,
        &SourceFile::new(path, String::new()),
        Span::point(Position::new(1, 1)),
        message,
    )
    .with_help("runbooks, tests and scenarios are far smaller: is this the file you meant?")
}

fn skipped(path: &Path, message: String) -> Diagnostic {
    Diagnostic::warning(
        Code::SkippedPath,
        &SourceFile::new(path, String::new()),
        Span::point(Position::new(1, 1)),
        message,
    )
}

/// A file or folder that cannot be read, as a diagnostic at its first line.
pub fn file_error(path: &Path, message: String) -> Diagnostic {
    Diagnostic::error(
        Code::Io,
        &SourceFile::new(path, String::new()),
        Span::point(Position::new(1, 1)),
        message,
    )
}
