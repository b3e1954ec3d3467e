//! [`Engine`]: which WebSocket implementation runs a connection, by the name the command line
//! and the cargo features use ([`UnknownEngine`] for one this build lacks). What each engine
//! does is in `engines/`.

/// Which WebSocket implementation runs a connection. Only the engines whose cargo feature
/// is on exist; [`Engine::NAMES`] lists every engine wscope knows, compiled in or not.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Engine {
    /// `tungstenite` (through tokio-tungstenite), the engine axum uses, and the reference the
    /// default engine is tested against. The default when `wscope`'s feature is off.
    #[cfg(feature = "tungstenite")]
    Tungstenite,
    /// `tokio-websockets`: SIMD masking and UTF-8 checks.
    #[cfg(feature = "tokio-websockets")]
    TokioWebsockets,
    /// `fastwebsockets` (Deno's), through its split API: each frame written as it is sent.
    #[cfg(feature = "fastwebsockets")]
    Fastwebsockets,
    /// `wscope`, wscope's own and the default: the frame guard's checks made where frames are
    /// parsed, frames parsed in a buffer per thread, nothing held while idle, writes corked. It
    /// idles in less memory and spends less CPU per message than the others; docs/BENCHMARKS.md
    /// has the figures.
    #[cfg(feature = "wscope")]
    Wscope,
}

impl Default for Engine {
    /// wscope's own when compiled in, else tungstenite, else the first engine that is.
    fn default() -> Self {
        Engine::ALL[0]
    }
}

impl Engine {
    /// Every engine compiled into this build, the default first.
    pub const ALL: &'static [Engine] = &[
        #[cfg(feature = "wscope")]
        Engine::Wscope,
        #[cfg(feature = "tungstenite")]
        Engine::Tungstenite,
        #[cfg(feature = "tokio-websockets")]
        Engine::TokioWebsockets,
        #[cfg(feature = "fastwebsockets")]
        Engine::Fastwebsockets,
    ];

    /// Every engine wscope knows, by its command-line name (each is also the name of its cargo
    /// feature), whether or not this build has it.
    pub const NAMES: [&'static str; 4] = [
        "tungstenite",
        "tokio-websockets",
        "fastwebsockets",
        "wscope",
    ];

    /// The name used on the command line and as the cargo feature.
    pub fn as_str(self) -> &'static str {
        match self {
            #[cfg(feature = "tungstenite")]
            Engine::Tungstenite => "tungstenite",
            #[cfg(feature = "tokio-websockets")]
            Engine::TokioWebsockets => "tokio-websockets",
            #[cfg(feature = "fastwebsockets")]
            Engine::Fastwebsockets => "fastwebsockets",
            #[cfg(feature = "wscope")]
            Engine::Wscope => "wscope",
        }
    }

    /// The names of the engines in this build, comma-separated (for help and error texts).
    pub fn compiled_names() -> String {
        Engine::ALL
            .iter()
            .map(|e| e.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl std::fmt::Display for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not an engine of this build.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnknownEngine {
    /// wscope has no engine of that name.
    #[error("unknown engine {0:?}: use {list}", list = Engine::compiled_names())]
    Unknown(String),
    /// wscope knows the engine, but this build was made without its cargo feature.
    #[error("engine {0:?} is not in this build (it has {list}): rebuild with `--features {0}`", list = Engine::compiled_names())]
    NotCompiled(String),
}

impl std::str::FromStr for Engine {
    type Err = UnknownEngine;
    fn from_str(s: &str) -> Result<Self, UnknownEngine> {
        if let Some(e) = Engine::ALL.iter().find(|e| e.as_str() == s) {
            return Ok(*e);
        }
        if Engine::NAMES.contains(&s) {
            Err(UnknownEngine::NotCompiled(s.to_owned()))
        } else {
            Err(UnknownEngine::Unknown(s.to_owned()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_unknown_ones_are_named() {
        for e in Engine::ALL {
            assert_eq!(e.as_str().parse::<Engine>(), Ok(*e));
        }
        let err = "quick".parse::<Engine>().unwrap_err().to_string();
        assert!(err.contains("unknown engine \"quick\""), "{err}");
        assert!(err.contains(&Engine::compiled_names()), "{err}");
        assert_eq!(Engine::default(), Engine::ALL[0]);
    }
}
