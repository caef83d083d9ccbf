//! The files of the state dir (journals, locks, set-aside torn lines, the server's token) and
//! the directories that hold them: readable by their owner only (files 0600, directories
//! 0700), and never opened through a symbolic link. A journal holds params, outputs and undo
//! state; the token approves gates; and a link planted where a state file goes would have a
//! run (often root's) write or truncate whatever it points to.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::Path;

/// Creates `dir` and its missing parents, each 0700. Directories that already exist are left
/// as they are: the state dir itself may be one the user chose and shares.
pub fn create_dirs(dir: &Path) -> io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt as _;
        builder.mode(0o700);
    }
    builder.create(dir)
}

/// [`create_dirs`] for a directory that holds state files and nothing else (`runs/`,
/// `locks/`): if it exists and others may read or enter it, it is tightened to 0700. A
/// symbolic link there (runs kept on another disk) is the user's and is not changed.
pub fn own_dir(dir: &Path) -> io::Result<()> {
    create_dirs(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let metadata = std::fs::symlink_metadata(dir)?;
        if metadata.is_dir() && metadata.permissions().mode() & 0o077 != 0 {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
    }
    Ok(())
}

/// Opens the state file at `path` with `options` (which say read, write, append, create...):
/// created 0600; never through a symbolic link (refused, naming the file); only a regular
/// file; and an existing one that others may read is tightened to 0600, through the handle.
pub fn open(path: &Path, options: &mut OpenOptions) -> io::Result<File> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600).custom_flags(libc::O_NOFOLLOW);
    }
    let file = options.open(path).map_err(|error| {
        if is_symlink_refusal(&error) {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{} is a symbolic link; state files are never written through one: remove it",
                    path.display()
                ),
            )
        } else {
            error
        }
    })?;
    let metadata = file.metadata()?;
    if !metadata.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a regular file", path.display()),
        ));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        if metadata.permissions().mode() & 0o077 != 0 {
            file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        }
    }
    Ok(file)
}

/// `O_NOFOLLOW` on a symbolic link fails with `ELOOP`.
fn is_symlink_refusal(error: &io::Error) -> bool {
    #[cfg(unix)]
    {
        error.raw_os_error() == Some(libc::ELOOP)
    }
    #[cfg(not(unix))]
    {
        let _ = error;
        false
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    fn mode(path: &Path) -> u32 {
        std::fs::symlink_metadata(path)
            .expect("metadata")
            .permissions()
            .mode()
            & 0o777
    }

    #[test]
    fn a_state_file_is_0600_an_existing_one_is_tightened_and_a_link_is_refused() {
        let dir = std::env::temp_dir().join(format!("runbook-state-files-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let runs = dir.join("runs");
        own_dir(&runs).expect("runs dir");
        assert_eq!(mode(&runs), 0o700);
        std::fs::set_permissions(&runs, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        own_dir(&runs).expect("runs dir again");
        assert_eq!(mode(&runs), 0o700, "an existing runs dir is tightened");

        let new = runs.join("new.jsonl");
        open(&new, OpenOptions::new().append(true).create(true)).expect("created");
        assert_eq!(mode(&new), 0o600);

        let loose = runs.join("loose.jsonl");
        std::fs::write(&loose, "x\n").expect("write");
        std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        open(&loose, OpenOptions::new().append(true)).expect("opened");
        assert_eq!(mode(&loose), 0o600, "an existing file is tightened");

        let victim = dir.join("victim");
        std::fs::write(&victim, "keep me\n").expect("victim");
        let link = runs.join("link.jsonl");
        std::os::unix::fs::symlink(&victim, &link).expect("symlink");
        let refused = open(
            &link,
            OpenOptions::new().write(true).create(true).truncate(true),
        )
        .expect_err("a link is refused");
        assert!(
            refused.to_string().contains("is a symbolic link"),
            "{refused}"
        );
        assert_eq!(
            std::fs::read_to_string(&victim).expect("victim"),
            "keep me\n"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
