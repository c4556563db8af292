//! [`Listen`]: where a listener listens, or that it is off.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// An address to listen on, or `off`, as a setting reads it
/// (`"127.0.0.1:50053"`, `"off"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Listen {
    Off,
    At(SocketAddr),
}

impl Listen {
    /// On loopback, at `port`.
    pub const fn loopback(port: u16) -> Self {
        Self::At(SocketAddr::new(
            std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
            port,
        ))
    }

    pub fn address(self) -> Option<SocketAddr> {
        match self {
            Self::Off => None,
            Self::At(address) => Some(address),
        }
    }
}

impl FromStr for Listen {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        if text.trim().eq_ignore_ascii_case("off") {
            return Ok(Self::Off);
        }
        text.trim().parse().map(Self::At).map_err(|_| {
            format!("expected host:port such as \"127.0.0.1:50053\" (an IP address and a port), or \"off\", got {text:?}")
        })
    }
}

impl TryFrom<String> for Listen {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        text.parse()
    }
}

impl From<Listen> for String {
    fn from(listen: Listen) -> Self {
        listen.to_string()
    }
}

impl fmt::Display for Listen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Off => f.write_str("off"),
            Self::At(address) => write!(f, "{address}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_off_are_read_and_written_back() {
        assert_eq!("off".parse::<Listen>().unwrap(), Listen::Off);
        assert_eq!(" OFF ".parse::<Listen>().unwrap(), Listen::Off);
        let at: Listen = "0.0.0.0:9".parse().unwrap();
        assert_eq!(at.address(), Some(SocketAddr::from(([0, 0, 0, 0], 9))));
        assert_eq!(at.to_string(), "0.0.0.0:9");
        assert_eq!(Listen::loopback(50053).to_string(), "127.0.0.1:50053");
        let error = "localhost".parse::<Listen>().unwrap_err();
        assert!(
            error.contains("host:port") && error.contains("\"off\""),
            "{error}"
        );
    }
}
