//! The data directory (`--data-dir`): what its files are named and how it
//! and they are kept their owner's alone. Every file of the local runtime
//! lives in it: the database ([`database_path`], with SQLite's WAL and
//! shared-memory files beside it, [`database_files`]), the master key
//! ([`master_key_path`]) and the server's token ([`token_path`]).
//!
//! [`DataDir::open`] is the one place that makes or opens it: every opener
//! (the database, the master key, the stored secrets, `serve`'s token, the
//! demo) goes through it, so the directory is mode 0700 before anything is
//! written in it; the files made in it are mode 0600 from the moment they
//! exist ([`DataDir::create_file`], [`DataDir::prepare_database`]).

use std::path::{Path, PathBuf};

/// The mode of a data directory: its owner's alone.
pub const DIR_MODE: u32 = 0o700;
/// The mode of every file in a data directory: its owner's alone.
pub const FILE_MODE: u32 = 0o600;

/// The master key file's name inside a data directory.
pub const MASTER_KEY_FILE: &str = "master.key";
/// The server token file's name inside a data directory.
pub const TOKEN_FILE: &str = "token";

/// The database file inside a data directory.
pub fn database_path(data_dir: &Path) -> PathBuf {
    data_dir.join("crm.db")
}

/// The master key file inside a data directory.
pub fn master_key_path(data_dir: &Path) -> PathBuf {
    data_dir.join(MASTER_KEY_FILE)
}

/// The all-scopes token file inside a data directory.
pub fn token_path(data_dir: &Path) -> PathBuf {
    data_dir.join(TOKEN_FILE)
}

/// A data directory that exists and is its owner's alone (mode 0700).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataDir {
    path: PathBuf,
}

impl DataDir {
    /// Makes the directory at `path` (and any missing parent) with mode
    /// 0700, or opens the one there: one that group or others may enter is
    /// tightened to 0700, with a warning; one that cannot be (not ours, or a
    /// shared directory with the sticky bit, such as `/tmp`) is used with a
    /// warning.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        private_dir(path)?;
        Ok(DataDir {
            path: path.to_path_buf(),
        })
    }

    /// The data directory that holds the file at `file` (its parent; the
    /// current directory for a bare name), opened as [`DataDir::open`] does.
    pub fn holding(file: &Path) -> std::io::Result<Self> {
        match file.parent().filter(|d| !d.as_os_str().is_empty()) {
            Some(dir) => Self::open(dir),
            // The current directory is the user's, not ours to tighten.
            None => Ok(DataDir {
                path: PathBuf::from("."),
            }),
        }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Its database file (`crm.db`).
    pub fn database(&self) -> PathBuf {
        database_path(&self.path)
    }

    /// Its master key file.
    pub fn master_key(&self) -> PathBuf {
        master_key_path(&self.path)
    }

    /// Its all-scopes token file.
    pub fn token(&self) -> PathBuf {
        token_path(&self.path)
    }

    /// Opens `name` in the directory for writing with `create`:
    /// [`Create::New`] fails if it exists, [`Create::Replace`] empties one
    /// that does. A file it makes has mode 0600 from the start.
    pub fn create_file(&self, name: &str, create: Create) -> std::io::Result<std::fs::File> {
        create_private_file(&self.path.join(name), create)
    }

    /// Makes the database file at `db` (in this directory) an empty file of
    /// mode 0600 if it does not exist yet, before SQLite opens it: SQLite
    /// gives the `-wal` and `-shm` files it makes beside it the database
    /// file's mode, so all three are private from the start. A database an
    /// earlier version left open to others is tightened ([`private_file`]).
    pub fn prepare_database(&self, db: &Path) -> std::io::Result<()> {
        match create_private_file(db, Create::New) {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => private_file(db),
            Err(e) => Err(e),
        }
    }
}

/// How [`create_private_file`] treats a file that is already there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Create {
    /// Fail with `AlreadyExists`.
    New,
    /// Empty it (and tighten it to 0600).
    Replace,
}

/// Opens `path` for writing, creating it with mode 0600 from the start (on
/// unix); a file already there is handled as `create` says. Used for the
/// files of a data directory ([`DataDir::create_file`]) and for the privacy
/// export (personal data written wherever `--out` says).
pub fn create_private_file(path: &Path, create: Create) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true);
    match create {
        Create::New => options.create_new(true),
        Create::Replace => options.create(true).truncate(true),
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(FILE_MODE);
    }
    let file = options.open(path)?;
    if create == Create::Replace {
        // The mode applies only to a file it creates; one already there keeps its own.
        private_file(path)?;
    }
    Ok(file)
}

/// Makes `dir` (and any missing parent) with mode [`DIR_MODE`], or tightens
/// it: see [`DataDir::open`], its one caller.
fn private_dir(dir: &Path) -> std::io::Result<()> {
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

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).expect("metadata").permissions().mode() & 0o777
    }

    #[test]
    fn an_open_directory_and_an_open_file_are_tightened() {
        let parent = tempfile::tempdir().expect("temp dir");
        let dir = parent.path().join("data");
        std::fs::create_dir(&dir).expect("mkdir");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let data_dir = DataDir::open(&dir).expect("open");
        assert_eq!(mode(&dir), DIR_MODE);

        let db = data_dir.database();
        std::fs::write(&db, "").expect("write");
        std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        data_dir.prepare_database(&db).expect("prepare");
        assert_eq!(mode(&db), FILE_MODE);

        std::fs::write(data_dir.token(), "old").expect("write");
        std::fs::set_permissions(data_dir.token(), std::fs::Permissions::from_mode(0o644)).expect("chmod");
        data_dir.create_file(TOKEN_FILE, Create::Replace).expect("replace");
        assert_eq!(mode(&data_dir.token()), FILE_MODE);
        assert_eq!(std::fs::read_to_string(data_dir.token()).expect("read"), "");
        assert_eq!(
            data_dir
                .create_file(TOKEN_FILE, Create::New)
                .map_err(|e| e.kind())
                .err(),
            Some(std::io::ErrorKind::AlreadyExists)
        );
    }
}
