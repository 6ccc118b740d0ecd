//! The endpoint URL parser ([`Endpoint::parse`]): `--source`, `--target` and the
//! config file's URLs, on any text.
//!
//! Asserts: no panic; and when the input has the shape
//! `scheme://user:PASSWORD@rest` (PASSWORD: from the first `:` after `://` to the
//! last `@`), neither the error message nor the parsed endpoint's `Display` and
//! `Debug` contain PASSWORD, as it is or escaped as `{:?}` escapes it (the message
//! shows the URL that way). A password short enough or common enough to be part
//! of the message anyway (it also occurs in the rest of the input, either way, or
//! in the message's fixed text) is not checked.

use lockstep_sync::endpoint::Endpoint;

/// The fixed text of the parser's messages, in which a short password may occur
/// without having leaked.
const FIXED_TEXT: &str =
    "bad Redis URL : (expected redis[s]://[[user]:password@]host[:port][/db]) \
     scheme is neither redis nor rediss no host user or password is not valid \
     percent-encoded UTF-8 database is not a number redis:// rediss://";

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
    // The message shows the (redacted) URL escaped as by `{:?}`: the password must
    // show in neither form, unless the rest of the input holds it in either form.
    let context = format!("{rest} {} {FIXED_TEXT}", escaped(&rest));
    // The url crate's own messages ("invalid port number", ...) are fixed words too.
    let wordy = password.chars().all(|c| c.is_ascii_lowercase() || c == ' ');
    for form in [password.to_owned(), escaped(password)] {
        if form.len() >= 4 && !wordy && !context.contains(&form) {
            assert!(
                !shown.contains(&form),
                "the password {password:?} of {url:?} shows in {shown:?}"
            );
        }
    }
}

/// `text` as `{:?}` shows it, without the quotes.
fn escaped(text: &str) -> String {
    let quoted = format!("{text:?}");
    quoted[1..quoted.len() - 1].to_owned()
}
