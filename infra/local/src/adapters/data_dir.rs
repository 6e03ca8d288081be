//! The data directory (`--data-dir`): what its files are named and how it
//! and they are kept their owner's alone. Every file of the local runtime
//! lives in it: the database ([`database_path`], with SQLite's WAL and
//! shared-memory files beside it, [`database_files`]), the master key
//! ([`master_key_path`]) and the server's token (`token`). The adapters that
//! create a file in it (the database, the master key, the stored secrets)
//! first make it private ([`private_dir`]).

use std::path::{Path, PathBuf};

/// The mode of a data directory: its owner's alone.
pub const DIR_MODE: u32 = 0o700;
/// The mode of every file in a data directory: its owner's alone.
pub const FILE_MODE: u32 = 0o600;

/// The master key file's name inside a data directory.
pub const MASTER_KEY_FILE: &str = "master.key";

/// The database file inside a data directory.
pub fn database_path(data_dir: &Path) -> PathBuf {
    data_dir.join("crm.db")
}

/// The master key file inside a data directory.
pub fn master_key_path(data_dir: &Path) -> PathBuf {
    data_dir.join(MASTER_KEY_FILE)
}

/// Makes `dir` (and any missing parent) with mode [`DIR_MODE`]. A directory
/// that already exists and that group or others may enter is tightened to
/// [`DIR_MODE`], with a warning; one that cannot be (not ours, or a shared
/// directory with the sticky bit, such as `/tmp`) is left with a warning.
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        match std::fs::metadata(dir) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::DirBuilder::new().recursive(true).mode(DIR_MODE).create(dir)?;
                // The umask may only have taken bits away; set it exactly.
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(DIR_MODE))
            }
            Err(e) => Err(e),
            Ok(metadata) => {
                let mode = metadata.permissions().mode() & 0o7777;
                if mode & 0o077 == 0 {
                    return Ok(());
                }
                let shared = mode & 0o1000 != 0;
                match shared {
                    false => match std::fs::set_permissions(dir, std::fs::Permissions::from_mode(DIR_MODE)) {
                        Ok(()) => {
                            tracing::warn!(dir = %dir.display(), was = format!("{mode:04o}"), now = format!("{DIR_MODE:04o}"), "data directory was open to others: tightened");
                            Ok(())
                        }
                        Err(e) => {
                            tracing::warn!(dir = %dir.display(), mode = format!("{mode:04o}"), error = %e, "data directory is open to others and cannot be tightened (chmod 700 it)");
                            Ok(())
                        }
                    },
                    true => {
                        tracing::warn!(dir = %dir.display(), mode = format!("{mode:04o}"), "the data directory is a shared directory: give crm-local a directory of its own (--data-dir)");
                        Ok(())
                    }
                }
            }
        }
    }
    #[cfg(not(unix))]
    std::fs::create_dir_all(dir)
}

/// Tightens the file at `path` to [`FILE_MODE`] if group or others may use
/// it (absent: nothing to do).
pub fn private_file(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = match std::fs::metadata(path) {
            Ok(m) => m.permissions().mode() & 0o777,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        if mode & 0o077 != 0 {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(FILE_MODE))?;
            tracing::warn!(file = %path.display(), was = format!("{mode:04o}"), now = format!("{FILE_MODE:04o}"), "file was open to others: tightened");
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// The files SQLite keeps for the database at `path`: itself, its WAL and
/// its shared-memory index.
pub fn database_files(path: &Path) -> [PathBuf; 3] {
    let with = |suffix: &str| {
        let mut name = path.as_os_str().to_os_string();
        name.push(suffix);
        PathBuf::from(name)
    };
    [path.to_path_buf(), with("-wal"), with("-shm")]
}
