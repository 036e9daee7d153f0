//! The `Replaces` header (RFC 3891): which dialog a new INVITE takes the place of. Its tags are
//! written as they would appear in a request arriving in that dialog: `to-tag` is the tag of the
//! party receiving the INVITE (hookflash's own tag), `from-tag` the other party's.

/// A parsed `Replaces` value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replaces {
    pub call_id: String,
    /// hookflash's tag in the replaced dialog.
    pub to_tag: String,
    /// The other party's tag in it.
    pub from_tag: String,
    /// `early-only`: replace the dialog only while it is early (call pickup, never a takeover).
    pub early_only: bool,
}

impl Replaces {
    /// Reads `call-id;to-tag=…;from-tag=…[;early-only]`, parameters in any order and case; the
    /// percent-escaped form a `Refer-To` URI carries (`%3B`, `%3D`, `%40`) is read too. `None`
    /// when the Call-ID or either tag is missing.
    pub fn parse(value: &str) -> Option<Replaces> {
        let value = unescape(value.trim());
        let mut parts = value.split(';');
        let call_id = parts.next()?.trim().to_string();
        if call_id.is_empty() {
            return None;
        }
        let (mut to_tag, mut from_tag, mut early_only) = (None, None, false);
        for part in parts {
            let (name, value) = part.split_once('=').unwrap_or((part, ""));
            match name.trim().to_ascii_lowercase().as_str() {
                "to-tag" => to_tag = Some(value.trim().to_string()),
                "from-tag" => from_tag = Some(value.trim().to_string()),
                "early-only" => early_only = true,
                _ => {}
            }
        }
        Some(Replaces {
            call_id,
            to_tag: to_tag.filter(|t| !t.is_empty())?,
            from_tag: from_tag.filter(|t| !t.is_empty())?,
            early_only,
        })
    }
}

/// `%XX` escapes decoded (a `Refer-To` URI's header parameters are escaped; a `Replaces` header
/// itself seldom is). A malformed escape is kept as written.
fn unescape(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(high), Some(low)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push(high << 4 | low);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_header_and_the_escaped_refer_to_form() {
        let r = Replaces::parse("425928@bobster.example.org;to-tag=7743;from-tag=6472").unwrap();
        assert_eq!(r.call_id, "425928@bobster.example.org");
        assert_eq!((r.to_tag.as_str(), r.from_tag.as_str()), ("7743", "6472"));
        assert!(!r.early_only);
        // As linphone puts it in a Refer-To: from-tag first, escaped.
        let r = Replaces::parse("abc%40host%3Bfrom-tag%3Dx1%3Bto-tag%3Dy2%3Bearly-only").unwrap();
        assert_eq!(r.call_id, "abc@host");
        assert_eq!((r.to_tag.as_str(), r.from_tag.as_str()), ("y2", "x1"));
        assert!(r.early_only);
    }

    #[test]
    fn a_value_without_both_tags_is_refused() {
        assert_eq!(Replaces::parse("abc;to-tag=1"), None);
        assert_eq!(Replaces::parse(";to-tag=1;from-tag=2"), None);
        assert_eq!(Replaces::parse("abc;to-tag=;from-tag=2"), None);
        assert_eq!(
            Replaces::parse("%zz;to-tag=1;from-tag=2").unwrap().call_id,
            "%zz"
        );
        assert_eq!(
            Replaces::parse("é%4;to-tag=1;from-tag=2").unwrap().call_id,
            "é%4"
        );
    }
}
