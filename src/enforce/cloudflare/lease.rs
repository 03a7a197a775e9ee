//! The lease gate: in a fleet, which node writes to a Cloudflare account and list.
//!
//! Every node of a fleet receives the fleet's bans, but one request budget is spent only when
//! one node writes: the node holding a lease in Redis (the cluster task takes and renews it;
//! this module knows nothing of Redis). The cluster task sets the [`Role`] on a [`Gate`]; the
//! Cloudflare enforcer reads it before each call:
//!
//! - [`Role::Writer`]: this node holds the lease and writes as a host alone does;
//! - [`Role::Standby`] (and [`Role::Pending`], before Redis first answered): another node
//!   writes, so this one makes no Cloudflare call at all;
//! - [`Role::Alone`]: Redis has been unreachable for longer than the lease lives, so nobody
//!   can be sure to hold it: bans are placed, unbans and deletions wait. Failing closed at
//!   the edge, and two nodes that each think themselves alone cannot delete each other's
//!   items.
//!
//! Without `[cluster]` there is no gate and the enforcer writes as it always did.

use std::sync::{Arc, Mutex};

use super::settings::{CloudflareSettings, Mode, Scope};

/// What this node may do at Cloudflare now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    /// Redis has not answered yet since start: nobody is known to write, and this node does
    /// not, until it has the lease or Redis has stayed away for a lease's lifetime.
    Pending,
    /// This node holds the lease: it writes for the fleet.
    Writer,
    /// Another node holds the lease: no Cloudflare calls here.
    Standby {
        /// The node that holds it.
        holder: String,
    },
    /// Redis unreachable for longer than a lease lives: bans only, unbans wait.
    Alone,
}

impl Role {
    /// Whether this node calls Cloudflare at all in this role.
    pub fn calls(&self) -> bool {
        matches!(self, Role::Writer | Role::Alone)
    }

    /// Whether unbans and deletions are done in this role (only by the lease holder).
    pub fn deletes(&self) -> bool {
        matches!(self, Role::Writer)
    }

    /// What status says of it.
    pub fn describe(&self) -> String {
        match self {
            Role::Pending => "waiting for Redis to learn who writes to Cloudflare".into(),
            Role::Writer => "writing for the fleet (holds the lease)".into(),
            Role::Standby { holder } => format!("standby: node {holder} writes to Cloudflare"),
            Role::Alone => "Redis unreachable: adding bans only, unbans wait for the lease".into(),
        }
    }
}

/// The role shared by the cluster task (which sets it) and the Cloudflare enforcer (which
/// reads it). Cloning shares it.
#[derive(Clone, Debug)]
pub struct Gate(Arc<Mutex<Role>>);

impl Default for Gate {
    fn default() -> Gate {
        Gate(Arc::new(Mutex::new(Role::Pending)))
    }
}

impl Gate {
    /// A gate in [`Role::Pending`].
    pub fn new() -> Gate {
        Gate::default()
    }

    /// The role now.
    pub fn role(&self) -> Role {
        self.0.lock().unwrap().clone()
    }

    /// Sets the role; a change is logged once (going [`Role::Alone`] loudly, since unbans
    /// then wait). Returns whether it changed.
    pub fn set(&self, role: Role) -> bool {
        let mut cur = self.0.lock().unwrap();
        if *cur == role {
            return false;
        }
        match &role {
            Role::Alone => tracing::warn!(
                "Cloudflare: {} (Redis has been away longer than the lease lives)",
                role.describe()
            ),
            _ => tracing::info!("Cloudflare: {}", role.describe()),
        }
        *cur = role;
        true
    }
}

/// The Redis key of the lease for what `s` writes to: one account's list, or one scope's
/// access rules. The ids in it are checked by [`CloudflareSettings::check`] (letters and
/// digits only), and list names are lowercase letters, digits and `_`, so nothing in a key
/// can carry a separator or a glob.
pub fn lease_key(s: &CloudflareSettings) -> String {
    let id = |v: &Option<String>| v.clone().unwrap_or_default();
    match (s.mode, s.scope) {
        (Mode::List, _) => format!("moat:lease:cloudflare:{}:{}", id(&s.account_id), s.list),
        (Mode::AccessRules, Scope::Zone) => {
            format!("moat:lease:cloudflare:zone:{}", id(&s.zone_id))
        }
        (Mode::AccessRules, Scope::Account) => {
            format!("moat:lease:cloudflare:account:{}", id(&s.account_id))
        }
        // The credential's own user: no id in the configuration, one per fleet.
        (Mode::AccessRules, Scope::User) => "moat:lease:cloudflare:user".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(extra: &str) -> CloudflareSettings {
        toml::from_str(&format!(
            "token_file = \"t\"\naccount_id = \"a1\"\nzone_id = \"z2\"\n{extra}"
        ))
        .unwrap()
    }

    #[test]
    fn one_key_per_account_and_list_or_scope() {
        assert_eq!(
            lease_key(&settings("")),
            "moat:lease:cloudflare:a1:moat_block"
        );
        assert_eq!(
            lease_key(&settings("list = \"other\"")),
            "moat:lease:cloudflare:a1:other"
        );
        assert_eq!(
            lease_key(&settings("mode = \"access-rules\"")),
            "moat:lease:cloudflare:zone:z2"
        );
        assert_eq!(
            lease_key(&settings("mode = \"access-rules\"\nscope = \"account\"")),
            "moat:lease:cloudflare:account:a1"
        );
    }

    #[test]
    fn only_the_writer_deletes_and_a_standby_calls_nothing() {
        let standby = Role::Standby {
            holder: "node1".into(),
        };
        assert!(!standby.calls() && !Role::Pending.calls());
        assert!(Role::Alone.calls() && !Role::Alone.deletes());
        assert!(Role::Writer.calls() && Role::Writer.deletes());
        let g = Gate::new();
        assert!(g.set(Role::Writer));
        assert!(!g.set(Role::Writer), "no change, no second log line");
        assert_eq!(g.clone().role(), Role::Writer);
    }
}
