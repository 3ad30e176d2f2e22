//! The identifiers a plan is made of: an environment's id, a leased /24,
//! a MAC address.

use std::fmt;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use super::PlanError;
use lago_config::{POOL_FIRST, POOL_LAST};

/// An environment's short id: prefixes every libvirt object it owns.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct EnvId(String);

impl std::str::FromStr for EnvId {
    type Err = PlanError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EnvId::new(s)
    }
}

impl EnvId {
    /// Checks `id` (1-8 lowercase letters or digits).
    pub fn new(id: impl Into<String>) -> Result<Self, PlanError> {
        let id = id.into();
        let ok = (1..=8).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if ok {
            Ok(EnvId(id))
        } else {
            Err(PlanError::InvalidEnvId { id })
        }
    }

    /// A fresh random id: 8 hex digits from the OS random source.
    pub fn random() -> Self {
        use std::io::Read;
        let mut b = [0u8; 4];
        let from_os = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b));
        if from_os.is_err() {
            // No /dev/urandom: mix time, pid and a stack address.
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            let local = 0u8;
            let mix = t as u64 ^ (u64::from(std::process::id()) << 32) ^ (&local as *const u8 as u64);
            b = (fnv1a(&mix.to_le_bytes()) as u32).to_le_bytes();
        }
        EnvId(b.iter().map(|x| format!("{x:02x}")).collect())
    }

    /// The id used by previews (`lago validate`): no environment owns it.
    pub fn preview() -> Self {
        EnvId("preview".into())
    }

    /// The id as text, without the `lago-` prefix of object names.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The prefix of every libvirt object of this environment, `lago-<id>-`:
    /// the one place it is made (names, teardown, reaping, sweeping).
    pub fn object_prefix(&self) -> String {
        format!("{OBJECT_PREFIX}{}-", self.0)
    }

    /// The env id in a libvirt object name made with [`EnvId::object_prefix`].
    pub fn from_object_name(name: &str) -> Option<EnvId> {
        let rest = name.strip_prefix(OBJECT_PREFIX)?;
        let (id, tail) = rest.split_once('-')?;
        (!tail.is_empty()).then(|| EnvId::new(id).ok()).flatten()
    }
}

/// What every lago libvirt object name starts with.
pub const OBJECT_PREFIX: &str = "lago-";

impl TryFrom<String> for EnvId {
    type Error = PlanError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        EnvId::new(s)
    }
}

impl From<EnvId> for String {
    fn from(id: EnvId) -> String {
        id.0
    }
}

impl fmt::Display for EnvId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A /24 of the lease pool: `192.168.<third>.0/24`, third octet 200-255.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Subnet(u8);

impl Subnet {
    /// The pool subnet with this third octet, if it is in the pool.
    pub fn new(third_octet: u8) -> Option<Self> {
        (POOL_FIRST..=POOL_LAST)
            .contains(&third_octet)
            .then_some(Subnet(third_octet))
    }

    /// The pool subnet holding `ip`, if any.
    pub fn of(ip: Ipv4Addr) -> Option<Self> {
        let o = ip.octets();
        if o[0] == 192 && o[1] == 168 {
            Subnet::new(o[2])
        } else {
            None
        }
    }

    /// Every subnet of the pool, in order.
    pub fn pool() -> impl Iterator<Item = Subnet> {
        (POOL_FIRST..=POOL_LAST).map(Subnet)
    }

    /// The third octet: the `200` of `192.168.200.0/24`.
    pub fn third_octet(self) -> u8 {
        self.0
    }

    /// The address with host part `host`.
    pub fn host(self, host: u8) -> Ipv4Addr {
        Ipv4Addr::new(192, 168, self.0, host)
    }

    /// Whether `ip` is inside this subnet.
    pub fn contains(self, ip: Ipv4Addr) -> bool {
        let o = ip.octets();
        o[0] == 192 && o[1] == 168 && o[2] == self.0
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "192.168.{}.0/24", self.0)
    }
}

impl std::str::FromStr for Subnet {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let ip = s.strip_suffix("/24").unwrap_or(s);
        ip.parse::<Ipv4Addr>()
            .ok()
            .filter(|ip| ip.octets()[3] == 0)
            .and_then(Subnet::of)
            .ok_or_else(|| format!("expected a pool subnet like 192.168.200.0/24, found {s:?}"))
    }
}

impl TryFrom<String> for Subnet {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<Subnet> for String {
    fn from(s: Subnet) -> String {
        s.to_string()
    }
}

/// A NIC's MAC address; shown and serialized as `54:52:c0:a8:c8:02`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Mac(pub [u8; 6]);

impl Mac {
    /// Lago's MAC for an IPv4 address: `54:52:` + the four octets.
    pub fn for_ip(ip: Ipv4Addr) -> Self {
        let o = ip.octets();
        Mac([0x54, 0x52, o[0], o[1], o[2], o[3]])
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl TryFrom<String> for Mac {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let parts: Vec<u8> = s.split(':').filter_map(|p| u8::from_str_radix(p, 16).ok()).collect();
        <[u8; 6]>::try_from(parts)
            .map(Mac)
            .map_err(|_| format!("expected a MAC like 54:52:c0:a8:c8:02, found {s:?}"))
    }
}

impl From<Mac> for String {
    fn from(m: Mac) -> String {
        m.to_string()
    }
}

/// FNV-1a: a small, stable hash for names (not for secrets).
pub(super) fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
    })
}
