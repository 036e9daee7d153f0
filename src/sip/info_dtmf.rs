//! Keys sent in SIP INFO requests: `application/dtmf-relay` (`Signal=5\r\nDuration=160`, the
//! Cisco form most phones use) and `application/dtmf` (the bare key). Sans-IO.

use crate::keys::Key;

/// Why an INFO body carries no key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InfoError {
    /// Not a key content type: the INFO is not about DTMF (answered 415 by the caller).
    NotDtmf,
    /// A DTMF content type whose body names no key (answered 400).
    BadBody(String),
}

/// The key in an INFO with this `Content-Type` and body.
pub fn key_of(content_type: Option<&str>, body: &[u8]) -> Result<Key, InfoError> {
    let mime = content_type
        .and_then(|c| c.split(';').next())
        .map(|c| c.trim().to_ascii_lowercase())
        .ok_or(InfoError::NotDtmf)?;
    let text =
        std::str::from_utf8(body).map_err(|_| InfoError::BadBody("body is not text".into()))?;
    let signal = match mime.as_str() {
        "application/dtmf-relay" => text
            .lines()
            .filter_map(|l| l.split_once('='))
            .find(|(name, _)| name.trim().eq_ignore_ascii_case("signal"))
            .map(|(_, v)| v.trim())
            .ok_or_else(|| InfoError::BadBody("no `Signal=` line".into()))?,
        "application/dtmf" => text.trim(),
        _ => return Err(InfoError::NotDtmf),
    };
    // Some phones send event codes 10/11 for `*`/`#`.
    let key = match signal {
        "10" => Some(Key::Star),
        "11" => Some(Key::Hash),
        s if s.chars().count() == 1 => s.chars().next().and_then(Key::from_char),
        _ => None,
    };
    key.ok_or_else(|| InfoError::BadBody(format!("`{signal}` is not a DTMF key")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phones_forms_of_info_keys() {
        let relay = Some("application/dtmf-relay");
        assert_eq!(key_of(relay, b"Signal=5\r\nDuration=160\r\n"), Ok(Key::D5));
        assert_eq!(key_of(relay, b"signal= *\nduration=100"), Ok(Key::Star));
        assert_eq!(key_of(relay, b"Signal=11\r\nDuration=250"), Ok(Key::Hash));
        assert_eq!(
            key_of(Some("Application/DTMF; charset=x"), b"#"),
            Ok(Key::Hash)
        );
        assert_eq!(key_of(Some("application/dtmf"), b"a\r\n"), Ok(Key::A));
    }

    #[test]
    fn other_infos_and_garbage() {
        assert_eq!(
            key_of(Some("application/media_control+xml"), b"<x/>"),
            Err(InfoError::NotDtmf)
        );
        assert_eq!(key_of(None, b"5"), Err(InfoError::NotDtmf));
        assert!(matches!(
            key_of(Some("application/dtmf-relay"), b"Duration=160"),
            Err(InfoError::BadBody(_))
        ));
        assert!(matches!(
            key_of(Some("application/dtmf-relay"), b"Signal=12"),
            Err(InfoError::BadBody(_))
        ));
        assert!(matches!(
            key_of(Some("application/dtmf"), b"55"),
            Err(InfoError::BadBody(_))
        ));
        assert!(matches!(
            key_of(Some("application/dtmf"), &[0xff, 0xfe]),
            Err(InfoError::BadBody(_))
        ));
    }
}
