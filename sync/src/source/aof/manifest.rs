//! Which files an AOF source reads, in which order: a Redis 7 multi-part AOF
//! directory's manifest (`<appendfilename>.manifest`: one `file <name> seq <n> type
//! <b|h|i>` line per file), or a single AOF file. The base file comes first, then
//! the incr files in the manifest's order; history files (`type h`, left over from a
//! rewrite) are not read, as Redis does not load them.
//!
//! Pure but for listing a directory and reading the manifest: the files' content is
//! read by the pre-scan (`super`).

use std::path::{Path, PathBuf};

/// The files to replay, the base (if any) first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Layout {
    /// What the user named (for messages): the directory, manifest or file.
    pub named: PathBuf,
    pub files: Vec<PathBuf>,
}

/// Finds the files of `path`: a directory holding one `*.manifest`, a manifest, or
/// one AOF file.
pub(super) fn layout(path: &Path) -> Result<Layout, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot be read: {e}"))?;
    let manifest = if meta.is_dir() {
        find_manifest(path)?
    } else if path.extension().is_some_and(|e| e == "manifest") {
        path.to_path_buf()
    } else {
        return Ok(Layout {
            named: path.to_path_buf(),
            files: vec![path.to_path_buf()],
        });
    };
    let text = std::fs::read_to_string(&manifest)
        .map_err(|e| format!("its manifest {}: cannot be read: {e}", manifest.display()))?;
    let dir = manifest.parent().unwrap_or(Path::new("."));
    let names =
        parse_manifest(&text).map_err(|e| format!("its manifest {}: {e}", manifest.display()))?;
    Ok(Layout {
        named: path.to_path_buf(),
        files: names.into_iter().map(|name| dir.join(name)).collect(),
    })
}

/// The one `*.manifest` file of `dir`.
fn find_manifest(dir: &Path) -> Result<PathBuf, String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("cannot be listed: {e}"))?;
    let mut found: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "manifest"))
        .collect();
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err("holds no *.manifest file (fix: name a Redis 7 appenddirname directory, or an AOF file of Redis 6 or earlier)".into()),
        _ => Err(format!(
            "holds {} manifests (fix: name one, e.g. aof://{})",
            found.len(),
            found[0].display()
        )),
    }
}

/// The manifest's base file and incr files, in replay order.
pub(super) fn parse_manifest(text: &str) -> Result<Vec<String>, String> {
    let mut base = None;
    let mut incrs = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let words = split_words(line).map_err(|e| format!("line {}: {e}", number + 1))?;
        let field = |name: &str| {
            words
                .chunks(2)
                .find(|pair| pair[0] == name)
                .and_then(|pair| pair.get(1).cloned())
        };
        let (Some(file), Some(kind)) = (field("file"), field("type")) else {
            return Err(format!(
                "line {}: expected 'file <name> seq <n> type <b|h|i>'",
                number + 1
            ));
        };
        if file.contains('/') {
            return Err(format!(
                "line {}: file {file:?} is not a name in the directory",
                number + 1
            ));
        }
        match kind.as_str() {
            "b" if base.is_some() => return Err("two base files".into()),
            "b" => base = Some(file),
            "i" => incrs.push(file),
            "h" => {}
            other => return Err(format!("line {}: unknown file type {other:?}", number + 1)),
        }
    }
    let files: Vec<String> = base.into_iter().chain(incrs).collect();
    if files.is_empty() {
        return Err("lists no base or incr file".into());
    }
    Ok(files)
}

/// The words of a manifest line: separated by spaces, a word in double quotes
/// with `\\`, `\"`, `\n`, `\r`, `\t` and `\xHH` escapes (as Redis quotes a name).
fn split_words(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let Some(&first) = chars.peek() else {
            return Ok(words);
        };
        if first != '"' {
            let word: String =
                std::iter::from_fn(|| chars.next_if(|c| !c.is_whitespace())).collect();
            words.push(word);
            continue;
        }
        chars.next();
        let mut word = String::new();
        loop {
            match chars.next() {
                None => return Err("an unterminated quoted name".into()),
                Some('"') => break,
                Some('\\') => word.push(unescape(&mut chars)?),
                Some(c) => word.push(c),
            }
        }
        words.push(word);
    }
}

/// The character after a backslash in a quoted name.
fn unescape(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Result<char, String> {
    match chars.next() {
        Some('n') => Ok('\n'),
        Some('r') => Ok('\r'),
        Some('t') => Ok('\t'),
        Some('x') => {
            let hex: String = chars.by_ref().take(2).collect();
            u8::from_str_radix(&hex, 16)
                .map(char::from)
                .map_err(|_| format!("a bad escape \\x{hex}"))
        }
        Some(c) => Ok(c),
        None => Err("a name ending in a backslash".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_base_comes_first_then_the_incr_files_in_order() {
        let text = "file appendonly.aof.2.incr.aof seq 2 type i\n\
                    file appendonly.aof.1.base.rdb seq 1 type b\n\
                    file appendonly.aof.0.base.rdb seq 0 type h\n\
                    file \"odd name.aof\" seq 3 type i\n";
        assert_eq!(
            parse_manifest(text).expect("parses"),
            [
                "appendonly.aof.1.base.rdb",
                "appendonly.aof.2.incr.aof",
                "odd name.aof"
            ]
        );
    }

    #[test]
    fn a_bad_manifest_says_which_line() {
        let bad = parse_manifest("file a seq 1\n").expect_err("no type");
        assert!(bad.contains("line 1"), "{bad}");
        let path = parse_manifest("file ../x seq 1 type i\n").expect_err("a path");
        assert!(path.contains("not a name"), "{path}");
        assert!(parse_manifest("").is_err());
        assert!(parse_manifest("file \"a seq 1 type i\n").is_err());
    }

    #[test]
    fn a_directory_is_read_through_its_manifest() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("appendonly.aof.manifest"),
            "file appendonly.aof.1.base.rdb seq 1 type b\nfile appendonly.aof.1.incr.aof seq 1 type i\n",
        )
        .expect("write");
        let found = layout(dir.path()).expect("a layout");
        assert_eq!(
            found.files,
            [
                dir.path().join("appendonly.aof.1.base.rdb"),
                dir.path().join("appendonly.aof.1.incr.aof")
            ]
        );
        let empty = tempfile::tempdir().expect("tempdir");
        assert!(layout(empty.path())
            .expect_err("none")
            .contains("no *.manifest"));
    }
}
