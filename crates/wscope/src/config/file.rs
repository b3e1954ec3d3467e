//! The `--config` file: a TOML table whose keys are the settings' flags in snake_case. It is
//! walked key by key over toml's spanned document, not deserialized into a struct, so that every
//! error can name its key and line (a serde error says neither which key nor, through a derived
//! struct, where).

use std::path::Path;

use toml::de::DeTable;

use super::declare::Partial;
use super::error::ConfigError;

/// The largest settings file read: a few dozen keys take a few KiB; anything near this is not
/// a settings file (and `/dev/zero` must not be read for ever).
pub(crate) const MAX_FILE_BYTES: u64 = 1 << 20;

/// Reads the settings of `P` that `path` sets; any bad key or value is an error naming it and its
/// line. `command` is the subcommand whose `--help` lists the keys (`wscope serve`).
pub(crate) fn read<P: Partial>(path: &Path, command: &str) -> Result<P, ConfigError> {
    let text = read_bounded(path, MAX_FILE_BYTES).map_err(|why| match why {
        Bounded::TooLarge => ConfigError::FileTooLarge {
            path: path.to_owned(),
            max: MAX_FILE_BYTES,
        },
        Bounded::Io(why) => ConfigError::Unreadable {
            path: path.to_owned(),
            why,
        },
    })?;
    let error = |offset: usize, what: String| ConfigError::File {
        path: path.to_owned(),
        line: line_at(&text, offset),
        what,
    };
    let table = DeTable::parse(&text).map_err(|e| {
        // toml's message may span lines (what it expected); the first says what is wrong.
        let first = e.message().lines().next().unwrap_or("invalid TOML");
        error(e.span().map_or(0, |span| span.start), first.to_owned())
    })?;
    let mut entries: Vec<_> = table.get_ref().iter().collect();
    // The table is sorted by key; report the first problem in the file's order instead.
    entries.sort_by_key(|(key, _)| key.span().start);
    let mut partial = P::default();
    for (key, value) in entries {
        let name: &str = key.get_ref();
        match partial.set_from_toml(name, value.get_ref()) {
            Some(Ok(())) => {}
            Some(Err(why)) => return Err(error(key.span().start, format!("{name}: {why}"))),
            None => {
                let why = unknown_key(name, &P::keys(), command);
                return Err(error(key.span().start, why));
            }
        }
    }
    Ok(partial)
}

/// Why [`read_bounded`] gave no text.
#[derive(Debug)]
pub(crate) enum Bounded {
    /// More than the bound.
    TooLarge,
    /// Not readable, or not UTF-8.
    Io(std::io::Error),
}

/// The text of `path`, refused past `max` bytes without reading further.
pub(crate) fn read_bounded(path: &Path, max: u64) -> Result<String, Bounded> {
    let file = std::fs::File::open(path).map_err(Bounded::Io)?;
    read_open(file, max)
}

/// The text of an open `file`, refused past `max` bytes without reading further.
pub(crate) fn read_open(file: std::fs::File, max: u64) -> Result<String, Bounded> {
    use std::io::Read;
    let mut bytes = Vec::new();
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(Bounded::Io)?;
    if bytes.len() as u64 > max {
        return Err(Bounded::TooLarge);
    }
    String::from_utf8(bytes)
        .map_err(|e| Bounded::Io(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))
}

/// The line (from 1) that holds byte `offset` of `text`.
fn line_at(text: &str, offset: usize) -> usize {
    let before = text.as_bytes().get(..offset).unwrap_or(text.as_bytes());
    before.iter().filter(|&&b| b == b'\n').count() + 1
}

/// Why `name` is no key of `keys`, and the key meant where one is near.
fn unknown_key(name: &str, keys: &[&str], command: &str) -> String {
    match closest_key(name, keys) {
        Some(known) => format!("unknown key `{name}`; did you mean `{known}`?"),
        None => {
            format!(
                "unknown key `{name}`; the keys are the flags of `{command} --help` in snake_case"
            )
        }
    }
}

/// The key of `keys` nearest to a misspelt one (at most a third of its letters off).
fn closest_key<'k>(name: &str, keys: &[&'k str]) -> Option<&'k str> {
    keys.iter()
        .map(|&known| (edit_distance(name, known), known))
        .filter(|&(distance, _)| distance <= name.len().max(3) / 3)
        .min()
        .map(|(_, known)| known)
}

/// Levenshtein distance over bytes (keys are ASCII).
fn edit_distance(a: &str, b: &str) -> usize {
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.bytes().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.bytes().enumerate() {
            let next = (diagonal + usize::from(ca != cb))
                .min(row[j] + 1)
                .min(row[j + 1] + 1);
            diagonal = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_count_from_one() {
        let text = "a = 1\n\nb = 2\n";
        assert_eq!(line_at(text, 0), 1);
        assert_eq!(line_at(text, 7), 3);
        assert_eq!(line_at(text, 999), 4);
    }

    #[test]
    fn misspelt_keys_get_a_suggestion() {
        let keys = crate::config::PartialServeSettings::keys();
        assert_eq!(closest_key("listn", &keys), Some("listen"));
        assert_eq!(closest_key("trusted_proxies", &keys), Some("trusted_proxy"));
        assert_eq!(closest_key("colour", &keys), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
