//! The local bearer tokens (decision 0039). `<data_dir>/token` (mode 0600)
//! holds the all-scopes token `serve` prints; `crm-local token --scope ...`
//! mints narrower ones from it ([`crm_api::mint_local_token`]: the scopes in
//! clear, an HMAC under the all-scopes token). Replacing the file revokes
//! every token minted from it.

use crate::adapters::data_dir::{Create, DataDir, TOKEN_FILE};
use crm_api::{Scope, Scopes};
use std::path::{Path, PathBuf};

/// Why a token cannot be read or minted.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("cannot use data directory {path}: {source}")]
    DataDir { path: PathBuf, source: std::io::Error },
    #[error("unknown scope {0:?}; the scopes are crm/read, crm/write, crm/privacy and crm/admin")]
    UnknownScope(String),
    #[error("name at least one scope (--scope crm/read ...)")]
    NoScope,
}

/// Reads `<data_dir>/token`, creating it (mode 0600 from the start, in the
/// data directory opened by [`DataDir::open`]) with a fresh token if absent.
pub fn load_or_create(data_dir: &Path) -> Result<String, TokenError> {
    let io = |source| TokenError::DataDir {
        path: data_dir.to_path_buf(),
        source,
    };
    let data_dir = DataDir::open(data_dir).map_err(io)?;
    match std::fs::read_to_string(data_dir.token()) {
        Ok(t) if !t.trim().is_empty() => return Ok(t.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    let token = uuid::Uuid::new_v4().simple().to_string();
    let mut file = data_dir.create_file(TOKEN_FILE, Create::Replace).map_err(io)?;
    std::io::Write::write_all(&mut file, token.as_bytes()).map_err(io)?;
    Ok(token)
}

/// The scopes named (`crm/read`, ...): an unknown name is an error naming it.
pub fn parse_scopes(names: &[String]) -> Result<Scopes, TokenError> {
    if names.is_empty() {
        return Err(TokenError::NoScope);
    }
    names
        .iter()
        .flat_map(|n| n.split([',', ' ']).filter(|s| !s.is_empty()))
        .map(|n| Scope::parse(n).ok_or_else(|| TokenError::UnknownScope(n.to_string())))
        .collect()
}

/// `crm-local token --scope ...`: a token carrying exactly the named scopes,
/// signed with `all_scopes_token` (or, when `None`, `<data_dir>/token`).
pub fn mint(data_dir: &Path, all_scopes_token: Option<&str>, names: &[String]) -> Result<String, TokenError> {
    let scopes = parse_scopes(names)?;
    let all = match all_scopes_token {
        Some(t) => t.to_string(),
        None => load_or_create(data_dir)?,
    };
    Ok(crm_api::mint_local_token(&all, scopes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crm_api::scopes::local_token_scopes;

    #[test]
    fn minted_from_the_data_directory_token_with_the_named_scopes() {
        let dir = tempfile::tempdir().unwrap();
        let read_write = mint(dir.path(), None, &["crm/read".into(), "crm/write".into()]).unwrap();
        let all = std::fs::read_to_string(dir.path().join("token")).unwrap();
        assert_eq!(load_or_create(dir.path()).unwrap(), all, "the file is kept");
        assert_eq!(
            local_token_scopes(&all, &read_write),
            Some(Scopes::none().with(Scope::Read).with(Scope::Write))
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("token"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // Another data directory's token: the minted one is not valid there.
        let other = tempfile::tempdir().unwrap();
        assert_eq!(
            local_token_scopes(&load_or_create(other.path()).unwrap(), &read_write),
            None
        );
        // --token (CRM_TOKEN) instead of the file.
        let given = mint(other.path(), Some("given-token"), &["crm/privacy".into()]).unwrap();
        assert_eq!(
            local_token_scopes("given-token", &given),
            Some(Scopes::none().with(Scope::Privacy))
        );
    }

    #[test]
    fn unknown_or_missing_scopes_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        match mint(dir.path(), None, &["crm/reed".into()]) {
            Err(TokenError::UnknownScope(name)) => assert_eq!(name, "crm/reed"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(mint(dir.path(), None, &[]), Err(TokenError::NoScope)));
        assert!(!dir.path().join("token").exists(), "nothing written for a refused mint");
    }
}
