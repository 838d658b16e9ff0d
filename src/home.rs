//! fc7's home: one data folder holding `models/` and `indexes/`, so that the defaults are the
//! same whatever the current folder — `$FC7_HOME`, else `$XDG_DATA_HOME/fc7`, else
//! `~/.local/share/fc7`. Explicit `--model`/`--index`/`--out` paths work anywhere.

use std::ffi::OsString;
use std::path::PathBuf;

/// The data folder.
pub fn dir() -> PathBuf {
    dir_from(|name| std::env::var_os(name))
}

/// The data folder given the environment `var` reads.
fn dir_from(var: impl Fn(&str) -> Option<OsString>) -> PathBuf {
    let var = |name: &str| var(name).filter(|v| !v.is_empty());
    if let Some(p) = var("FC7_HOME") {
        return PathBuf::from(p);
    }
    if let Some(p) = var("XDG_DATA_HOME") {
        return PathBuf::from(p).join("fc7");
    }
    let home = var("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".local").join("share").join("fc7")
}

/// Where models are kept.
pub fn models() -> PathBuf {
    dir().join("models")
}

/// The model every command uses when none is named: what `fc7 train` and
/// `fc7 model init --random` write by default.
pub fn default_model() -> PathBuf {
    models().join("default.onnx")
}

/// The index every command uses when none is named.
pub fn default_index() -> PathBuf {
    dir().join("indexes").join("default")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fc7_home_wins_then_xdg_then_home() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                vars.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| OsString::from(v))
            }
        };
        static ALL: [(&str, &str); 3] = [
            ("FC7_HOME", "/a/fc7"),
            ("XDG_DATA_HOME", "/b"),
            ("HOME", "/c"),
        ];
        static EMPTY_XDG: [(&str, &str); 2] = [("XDG_DATA_HOME", ""), ("HOME", "/c")];
        assert_eq!(dir_from(env(&ALL)), PathBuf::from("/a/fc7"));
        assert_eq!(dir_from(env(&ALL[1..])), PathBuf::from("/b/fc7"));
        assert_eq!(
            dir_from(env(&EMPTY_XDG)),
            PathBuf::from("/c/.local/share/fc7")
        );
    }
}
