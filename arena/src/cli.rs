//! A small `--flag value` parser shared by the arena binaries (no parser crate:
//! the binaries take a handful of flags).

use std::collections::HashMap;
use std::str::FromStr;

/// Parsed `--name value` pairs and bare `--name` switches.
#[derive(Debug, Default)]
pub struct Args {
    values: HashMap<String, String>,
}

impl Args {
    /// Parses `args` (without the program name). A flag followed by another flag or
    /// by nothing is a switch, stored with the value `"true"`.
    ///
    /// # Errors
    /// A word that is not a flag and follows no flag.
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Self, String> {
        let mut values = HashMap::new();
        let mut it = args.into_iter().peekable();
        while let Some(a) = it.next() {
            let Some(name) = a.strip_prefix("--") else {
                return Err(format!("unexpected argument {a:?}: flags are --name value"));
            };
            let value = match it.peek() {
                Some(v) if !v.starts_with("--") => it.next().expect("peeked"),
                _ => "true".to_string(),
            };
            values.insert(name.to_string(), value);
        }
        Ok(Args { values })
    }

    /// The value of `--name` parsed as `T`, or `default` when absent.
    ///
    /// # Errors
    /// The value does not parse; the message names the flag.
    pub fn get<T: FromStr>(&mut self, name: &str, default: T) -> Result<T, String>
    where
        T::Err: std::fmt::Display,
    {
        match self.values.remove(name) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|e| format!("--{name} {v:?}: {e}")),
        }
    }

    /// The value of `--name` if present.
    ///
    /// # Errors
    /// The value does not parse; the message names the flag.
    pub fn opt<T: FromStr>(&mut self, name: &str) -> Result<Option<T>, String>
    where
        T::Err: std::fmt::Display,
    {
        self.values
            .remove(name)
            .map(|v| v.parse().map_err(|e| format!("--{name} {v:?}: {e}")))
            .transpose()
    }

    /// Fails if a flag was given that no `get`/`opt` asked for.
    ///
    /// # Errors
    /// Names the unknown flags.
    pub fn finish(self) -> Result<(), String> {
        if self.values.is_empty() {
            return Ok(());
        }
        let mut names: Vec<_> = self.values.into_keys().collect();
        names.sort();
        Err(format!("unknown flags: --{}", names.join(", --")))
    }
}
