//! moat protects an internet-facing Docker or Docker Swarm host: it follows logs, recognises
//! abuse such as bots guessing Portainer passwords, and bans the client where the ban works:
//! in the kernel before Docker's DNAT, or at Cloudflare's edge. It also keeps a port policy in
//! force that a container publishing `-p 8080:80` cannot bypass.
//!
//! # Layout
//!
//! The modules follow the flow of data, in layers. A module uses the layers below its own,
//! never one above or beside it (`tests/layers.rs` fails when one does); `docs/architecture.md`
//! says how to add an enforcer or a source.
//!
//! | layer | module | what it is | principal types |
//! |---|---|---|---|
//! | 0 | [`vocab`] | the small types every layer shares | [`vocab::Target`], [`vocab::ClientKey`], [`vocab::Ports`], [`vocab::Cursor`], [`vocab::Line`] |
//! | 1 | [`source`] | bytes to lines: files (every rotation), streams (journald, containers), offline inputs | [`source::follow::FileFollower`], [`source::stream::Stream`], [`source::SourceSpec`] |
//! | 1 | [`detect`] | a line to a verdict: prefilter, regex and JSON filters, times, the built-in library. Pure | [`detect::Filter`], [`detect::Verdict`], [`detect::LineContext`] |
//! | 1 | [`jail`] | failures to ban decisions: sliding windows, ignore lists, escalation. Pure | [`jail::Jail`], [`jail::BanDecision`] |
//! | 2 | [`pipeline`] | route → prefilter → filter → jail, pushing events into a sink: `moat scan` and the daemon are two sinks | [`pipeline::Pipeline`], [`pipeline::Sink`] |
//! | 3 | [`ledger`] | the decisions (what a fleet shares) and this node's progress | [`ledger::DecisionStore`], [`ledger::Progress`], [`ledger::SqliteLedger`] |
//! | 4 | [`netfilter`] | nftables and iptables plumbing, shared by the bans and the port policy | [`netfilter::nft::Nft`] |
//! | 5 | [`enforce`] | where a ban takes effect, one file and one registration per enforcer | [`enforce::Enforcer`], [`enforce::registry`] |
//! | 5 | [`ports`] | the port policy: model, compiler, apply/confirm/rollback | [`ports::PortPolicy`] |
//! | 6 | [`cluster`] | what a fleet of nodes shares through Redis: the decisions, the active bans, heartbeats, the Cloudflare lease | [`cluster::ClusterSettings`], [`cluster::wire::FleetBan`], [`cluster::run::ClusterTask`] |
//! | 7 | [`config`] | the TOML schema and validation; builds each part's settings | [`config::Config`] |
//! | 8 | [`daemon`] | `moat run`: tasks, channels, the engine, the control socket | [`daemon::engine::Engine`] |
//! | 8 | [`scan`] | `moat scan`: the pipeline offline and its report | [`scan::ScanReport`] |
//! | 8 | [`init`] | `moat init`: what it sees on a host and the configuration it writes | |
//! | 9 | [`cli`] | the subcommands, thin | |

// Every public item says what it is for (clippy runs with -D warnings).
#![warn(missing_docs)]

pub mod cli;
pub mod cluster;
pub mod config;
pub mod daemon;
pub mod detect;
pub mod enforce;
pub mod init;
pub mod jail;
pub mod ledger;
pub mod netfilter;
pub mod pipeline;
pub mod ports;
pub mod scan;
pub mod source;
pub mod vocab;
