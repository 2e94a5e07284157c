//! Where a configuration error is (`FILE:LINE:COLUMN`), and the list of them all: a file is
//! checked whole, so the user sees every error at once, in the file's order.

use std::fmt;

/// One error at a byte offset of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// byte offset into the file's text
    pub at: usize,
    /// what is wrong, lowercase, no trailing period
    pub message: String,
}

impl Problem {
    /// An error at `at`.
    pub fn new(at: usize, message: impl Into<String>) -> Self {
        Problem {
            at,
            message: message.into(),
        }
    }
}

/// Every error of one file, with its line and column, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors {
    /// `(line, column, message)`, both counted from 1 (the column in characters)
    pub list: Vec<(usize, usize, String)>,
    file: String,
}

impl ConfigErrors {
    /// Places `problems` in `text` (the file's content, named `file`), sorted by position.
    pub fn new(file: &str, text: &str, mut problems: Vec<Problem>) -> Self {
        problems.sort_by_key(|p| p.at);
        problems.dedup();
        let list = problems
            .into_iter()
            .map(|p| {
                let (line, col) = line_col(text, p.at);
                (line, col, p.message)
            })
            .collect();
        ConfigErrors {
            list,
            file: file.to_string(),
        }
    }

    /// An error about the file as a whole (it cannot be read): line 1, column 1.
    pub fn whole(file: &str, message: impl Into<String>) -> Self {
        ConfigErrors {
            list: vec![(1, 1, message.into())],
            file: file.to_string(),
        }
    }

    /// The file's name as given.
    pub fn file(&self) -> &str {
        &self.file
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (line, col, msg)) in self.list.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}:{line}:{col}: {msg}", self.file)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Line and column (from 1; the column in characters) of byte offset `at` in `text`.
pub fn line_col(text: &str, at: usize) -> (usize, usize) {
    let mut at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    let before = &text[..at];
    let line = before.matches('\n').count() + 1;
    let start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[start..].chars().count() + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_columns() {
        let t = "a = 1\nbé = 2\n\nc";
        assert_eq!(line_col(t, 0), (1, 1));
        assert_eq!(line_col(t, 4), (1, 5));
        assert_eq!(line_col(t, 6), (2, 1));
        // after the two-byte é: column 3
        assert_eq!(line_col(t, 9), (2, 3));
        assert_eq!(line_col(t, t.len()), (4, 2));
        assert_eq!(line_col(t, 999), (4, 2));
    }

    #[test]
    fn all_errors_in_order() {
        let t = "x\ny\nz\n";
        let e = ConfigErrors::new(
            "f.toml",
            t,
            vec![Problem::new(4, "third"), Problem::new(0, "first")],
        );
        assert_eq!(e.to_string(), "f.toml:1:1: first\nf.toml:3:1: third");
    }
}
