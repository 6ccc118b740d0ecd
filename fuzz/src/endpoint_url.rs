//! The endpoint URL parser ([`Endpoint::parse`]): `--source`, `--target` and the
//! config file's URLs, on any text.
//!
//! Asserts: no panic; and when the input has the shape
//! `scheme://user:PASSWORD@rest` (PASSWORD: from the first `:` after `://` to the
//! last `@`), neither the error message nor the parsed endpoint's `Display` and
//! `Debug` contain PASSWORD. A password short enough or common enough to be part
//! of the message anyway (it also occurs in the rest of the input, or in the
//! message's fixed text) is not checked.

use lockstep_sync::endpoint::Endpoint;

/// The fixed text of the parser's messages, in which a short password may occur
/// without having leaked.
const FIXED_TEXT: &str =
    "bad Redis URL : (expected redis[s]://[[user]:password@]host[:port][/db]) \
     scheme is neither redis nor rediss no host user or password is not valid \
     percent-encoded UTF-8 database is not a number";

/// The PASSWORD of `scheme://user:PASSWORD@rest`, and the input without it.
pub fn password_of(url: &str) -> Option<(&str, String)> {
    let start = url.find("://")? + 3;
    let at = start + url[start..].rfind('@')?;
    let colon = start + url[start..at].find(':')?;
    let password = &url[colon + 1..at];
    Some((password, format!("{}{}", &url[..colon + 1], &url[at..])))
}

pub fn run(data: &[u8]) {
    let Ok(url) = std::str::from_utf8(data) else {
        return;
    };
    let shown = match Endpoint::parse(url) {
        Ok(endpoint) => format!("{endpoint} {endpoint:?} {}", endpoint.address()),
        Err(e) => e.to_string(),
    };
    let Some((password, rest)) = password_of(url) else {
        return;
    };
    let unclear = password.len() < 4 || rest.contains(password) || FIXED_TEXT.contains(password);
    // The url crate's own messages ("invalid port number", ...) are fixed words too.
    let wordy = password.chars().all(|c| c.is_ascii_lowercase() || c == ' ');
    if !unclear && !wordy {
        assert!(
            !shown.contains(password),
            "the password {password:?} of {url:?} shows in {shown:?}"
        );
    }
}
