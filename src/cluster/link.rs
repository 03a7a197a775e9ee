//! The connection to Redis: a client built from `[cluster]` (directly, or through Redis
//! Sentinel to whichever server is the master now), two connections per session (one for
//! the blocking read of the log, one for everything else), and a backoff between attempts
//! so that an unreachable Redis costs a connection attempt every few seconds, not a busy loop.

use std::time::Duration;

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Client, ConnectionAddr, IntoConnectionInfo, RedisResult};

use super::settings::ClusterSettings;

/// How long a connection attempt may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a command may wait for its answer (a blocking read waits less than this).
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);
/// The first pause after a failure; it doubles up to [`BACKOFF_MAX`].
pub const BACKOFF_MIN: Duration = Duration::from_millis(250);
/// The longest pause between attempts.
pub const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// How to reach the fleet's Redis.
pub struct Link {
    settings: ClusterSettings,
    password: Option<String>,
}

/// The two connections of a session.
pub struct Connections {
    /// Publishing, the active set, heartbeats.
    pub commands: MultiplexedConnection,
    /// The blocking read of the log, which would hold up other commands.
    pub follow: MultiplexedConnection,
}

/// Every connection's timeouts.
fn connection_config() -> AsyncConnectionConfig {
    AsyncConnectionConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(RESPONSE_TIMEOUT))
}

impl Link {
    /// A link with `settings` and the password read from its file.
    pub fn new(settings: ClusterSettings, password: Option<String>) -> Link {
        Link { settings, password }
    }

    /// Where Redis is, for status and logs (no credentials: the URL holds none).
    pub fn describe(&self) -> String {
        match &self.settings.master_name {
            Some(m) => format!(
                "master {m:?} of sentinels {}",
                self.settings.sentinels.join(", ")
            ),
            None => self.settings.redis.clone(),
        }
    }

    async fn client(&self) -> RedisResult<Client> {
        let info = self.settings.redis.as_str().into_connection_info()?;
        let mut redis = info.redis_settings().clone();
        if let Some(u) = &self.settings.username {
            redis = redis.set_username(u);
        }
        if let Some(p) = &self.password {
            redis = redis.set_password(p);
        }
        let Some(master) = &self.settings.master_name else {
            return Client::open(info.set_redis_settings(redis));
        };
        let tls = matches!(info.addr(), ConnectionAddr::TcpTls { .. });
        let mut sentinels = Vec::new();
        for s in &self.settings.sentinels {
            let (host, port) = s.rsplit_once(':').unwrap_or((s, "26379"));
            let port = port.parse().unwrap_or(26379);
            let host = host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            sentinels.push(if tls {
                ConnectionAddr::TcpTls {
                    host,
                    port,
                    insecure: false,
                    tls_params: None,
                }
            } else {
                ConnectionAddr::Tcp(host, port)
            });
        }
        let mut b = redis::sentinel::SentinelClientBuilder::new(
            sentinels,
            master,
            redis::sentinel::SentinelServerType::Master,
        )?
        .set_client_to_redis_db(redis.db());
        if let Some(u) = redis.username() {
            b = b.set_client_to_redis_username(u);
        }
        if let Some(p) = redis.password() {
            b = b.set_client_to_redis_password(p);
        }
        if tls {
            b = b.set_client_to_redis_tls_mode(redis::TlsMode::Secure);
        }
        b.build()?.async_get_client().await
    }

    /// Opens a session's two connections and checks that Redis answers.
    pub async fn connect(&self) -> RedisResult<Connections> {
        let client = self.client().await?;
        let config = connection_config();
        let mut commands = client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        let follow = client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        ping(&mut commands).await?;
        Ok(Connections { commands, follow })
    }

    /// One connection, checked with a `PING` (the Cloudflare lease's, apart from the
    /// session's so that a session's failure and the lease's are each their own).
    pub async fn connect_one(&self) -> RedisResult<MultiplexedConnection> {
        let client = self.client().await?;
        let mut conn = client
            .get_multiplexed_async_connection_with_config(&connection_config())
            .await?;
        ping(&mut conn).await?;
        Ok(conn)
    }
}

/// A round trip to Redis, timed.
pub async fn ping(conn: &mut impl ConnectionLike) -> RedisResult<Duration> {
    let start = std::time::Instant::now();
    let _: String = redis::cmd("PING").query_async(conn).await?;
    Ok(start.elapsed())
}

/// The pauses between connection attempts: doubling from [`BACKOFF_MIN`] to [`BACKOFF_MAX`],
/// back to the start after a success.
#[derive(Debug)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff { next: BACKOFF_MIN }
    }
}

impl Backoff {
    /// The pause before the next attempt.
    pub fn next_pause(&mut self) -> Duration {
        let pause = self.next;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        pause
    }

    /// A connection worked: the next failure starts from the shortest pause again.
    pub fn reset(&mut self) {
        self.next = BACKOFF_MIN;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_ceiling_and_resets() {
        let mut b = Backoff::default();
        let pauses: Vec<Duration> = (0..8).map(|_| b.next_pause()).collect();
        assert_eq!(pauses[0], BACKOFF_MIN);
        assert_eq!(pauses[1], BACKOFF_MIN * 2);
        assert_eq!(*pauses.last().unwrap(), BACKOFF_MAX);
        b.reset();
        assert_eq!(b.next_pause(), BACKOFF_MIN);
    }
}
