//! What a command failed with. The client library's error is kept whole up to here, so that
//! the servers it proves misbehaved ([`obscura_client::Error::culprits`]) are named to the user
//! apart from those that were only down.

use obscura_client::Party;

/// Why a command failed.
pub(crate) enum Failure {
    /// The client library failed, with what the user can do about it, if anything.
    Client(obscura_client::Error, Option<&'static str>),
    /// Anything else, said in words.
    Said(String),
}

impl Failure {
    /// `error` followed by `then`: what to do next.
    pub(crate) fn then(error: obscura_client::Error, then: &'static str) -> Failure {
        Failure::Client(error, Some(then))
    }

    /// Write the failure to standard error: the error, the servers it proves misbehaved (whose
    /// operators should hear of it), then what to do.
    pub(crate) fn report(&self) {
        eprintln!("error: {self}");
        if let Failure::Client(e, then) = self {
            let culprits = e.culprits();
            if !culprits.is_empty() {
                eprintln!(
                    "misbehaved: {} (answers that failed the protocol's checks, not just \
                     unavailability: tell the operators)",
                    names(&culprits)
                );
            }
            if let Some(then) = then {
                eprintln!("{then}");
            }
        }
    }
}

/// `keeper 2: why`, with `(misbehaved)` after the keeper when its answer failed a check.
pub(crate) fn keeper_fault(f: &obscura_client::KeeperFailure) -> String {
    fault_line("keeper", f.keeper, &f.fault)
}

/// `node 2: why`, as [`keeper_fault`].
pub(crate) fn node_fault(f: &obscura_client::NodeFailure) -> String {
    fault_line("node", f.node, &f.fault)
}

fn fault_line(party: &str, x: u8, fault: &obscura_client::Fault) -> String {
    let misbehaved = if fault.is_misbehaviour() {
        " (misbehaved)"
    } else {
        ""
    };
    format!("{party} {x}{misbehaved}: {fault}")
}

/// `keeper 2, node 3`.
pub(crate) fn names(parties: &[Party]) -> String {
    parties
        .iter()
        .map(|p| match p {
            Party::Node(i) => format!("node {i}"),
            Party::Keeper(j) => format!("keeper {j}"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Client(e, _) => e.fmt(f),
            Failure::Said(s) => f.write_str(s),
        }
    }
}

impl From<obscura_client::Error> for Failure {
    fn from(e: obscura_client::Error) -> Self {
        Failure::Client(e, None)
    }
}

#[cfg(feature = "lab")]
impl From<obscura_lab::Error> for Failure {
    fn from(e: obscura_lab::Error) -> Self {
        match e {
            obscura_lab::Error::Client(e) => Failure::Client(e, None),
            obscura_lab::Error::Failed(s) => Failure::Said(s),
        }
    }
}

impl From<String> for Failure {
    fn from(s: String) -> Self {
        Failure::Said(s)
    }
}

impl From<&str> for Failure {
    fn from(s: &str) -> Self {
        Failure::Said(s.to_string())
    }
}
