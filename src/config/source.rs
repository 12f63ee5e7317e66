//! Configuration text with its origin, and the diagnostics that point into it.
//!
//! Every problem found in a file is kept as a [`Diagnostic`] with the file, line, column and key
//! path, so `dustgate check` can print all of them at once.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A configuration or data file held in memory, with a line index for positions.
#[derive(Debug)]
pub struct SourceFile {
    /// How the file is named in messages: its path, or `devices/x.toml (built in)`.
    pub name: String,
    /// Where it was read from; `None` for files built into the binary.
    pub path: Option<PathBuf>,
    pub text: String,
    line_starts: Vec<usize>,
}

impl SourceFile {
    pub fn new(name: impl Into<String>, path: Option<PathBuf>, text: String) -> Arc<Self> {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Arc::new(Self {
            name: name.into(),
            path,
            text,
            line_starts,
        })
    }

    /// Reads a file from disk; the error names the file.
    pub fn read(path: &Path) -> Result<Arc<Self>, Diagnostic> {
        match std::fs::read(path) {
            Ok(bytes) => match String::from_utf8(bytes) {
                Ok(text) => Ok(Self::new(
                    path.display().to_string(),
                    Some(path.to_path_buf()),
                    text,
                )),
                // Where the first bad byte is, so it can be found in an editor.
                Err(e) => {
                    let good = e.utf8_error().valid_up_to();
                    let prefix = String::from_utf8_lossy(&e.as_bytes()[..good]).into_owned();
                    let line = prefix.matches('\n').count() + 1;
                    let column = prefix.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
                    Err(Diagnostic {
                        file: path.display().to_string(),
                        line,
                        column,
                        key_path: String::new(),
                        message: format!(
                            "not UTF-8 text (byte 0x{:02x} at byte offset {good}): save the file as UTF-8",
                            e.as_bytes().get(good).copied().unwrap_or(0)
                        ),
                    })
                }
            },
            Err(e) => Err(Diagnostic {
                file: path.display().to_string(),
                line: 0,
                column: 0,
                key_path: String::new(),
                message: format!("cannot read file: {e}"),
            }),
        }
    }

    /// 1-based line and column (in characters) of a byte offset.
    pub fn position(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let line = match self.line_starts.binary_search(&offset) {
            Ok(i) => i,
            Err(i) => i - 1,
        };
        let start = self.line_starts[line];
        let column = self
            .text
            .get(start..offset)
            .map_or(offset - start, |s| s.chars().count());
        (line + 1, column + 1)
    }

    /// A diagnostic at `span` in this file.
    pub fn diagnostic(
        &self,
        span: &Range<usize>,
        key_path: &str,
        message: impl Into<String>,
    ) -> Diagnostic {
        let (line, column) = self.position(span.start);
        Diagnostic {
            file: self.name.clone(),
            line,
            column,
            key_path: key_path.to_string(),
            message: message.into(),
        }
    }
}

/// One problem in one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: String,
    /// 1-based; 0 when the problem is with the file as a whole.
    pub line: usize,
    pub column: usize,
    /// Dotted key path, e.g. `modbus[0].device[1].unit`; empty for syntax errors.
    pub key_path: String,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: ", self.file)?;
        } else {
            write!(f, "{}:{}:{}: ", self.file, self.line, self.column)?;
        }
        if !self.key_path.is_empty() {
            write!(f, "{}: ", self.key_path)?;
        }
        f.write_str(&self.message)
    }
}

/// All problems found while loading a configuration, in file order.
#[derive(Debug, Default, Clone, thiserror::Error)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    pub fn push(&mut self, d: Diagnostic) {
        self.0.push(d);
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    /// Orders by file, then position, and removes exact repeats.
    pub fn sort(&mut self) {
        self.0.sort_by(|a, b| {
            (&a.file, a.line, a.column, &a.key_path).cmp(&(&b.file, b.line, b.column, &b.key_path))
        });
        self.0.dedup();
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_count_characters_not_bytes() {
        let f = SourceFile::new("x", None, "a = 1\nname = \"锦江\" x\n".to_string());
        assert_eq!(f.position(0), (1, 1));
        assert_eq!(f.position(6), (2, 1));
        let x = f.text.rfind('x').unwrap();
        assert_eq!(f.position(x), (2, 13));
    }
}

/// The hex SHA-256 of `bytes`, as `sha256sum` prints it.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod sha_tests {
    #[test]
    fn the_hash_is_sha256sum_s() {
        // printf 'abc' | sha256sum
        assert_eq!(
            super::sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
