//! `usher healthcheck`: one GET of a running server's health endpoint, for a container's
//! HEALTHCHECK or an exec probe where no curl is installed. Exit 0 on a 2xx answer,
//! else 1 with one plain line saying what went wrong.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use usher::config::{Config, ConfigError, parse_duration};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The server's base URL, e.g. http://127.0.0.1:8080, instead of the configuration's
    /// `listen` address.
    #[arg(long, conflicts_with = "config")]
    url: Option<String>,
    /// Configuration file whose `listen` address to check (default: $USHER_CONFIG, else
    /// usher.yaml). An unspecified address (0.0.0.0, ::) is reached on loopback.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// The path to GET: /healthz (liveness) or /readyz (readiness).
    #[arg(long, default_value = "/healthz")]
    path: String,
    /// How long to wait for the whole answer: 500ms, 3s.
    #[arg(long, default_value = "3s", value_parser = parse_timeout)]
    timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum HealthcheckError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("`{0}` is not an http:// or https:// URL")]
    BadUrl(String),
    #[error("`{0}` is not a path (it must start with /)")]
    BadPath(String),
    #[error("unhealthy: {url}: cannot connect ({reason})")]
    Connect { url: String, reason: String },
    #[error("unhealthy: {url}: no answer within {}ms", timeout.as_millis())]
    Timeout { url: String, timeout: Duration },
    #[error("unhealthy: {url}: answered {status}")]
    Status {
        url: String,
        status: reqwest::StatusCode,
    },
    #[error("unhealthy: {url}: {reason}")]
    Request { url: String, reason: String },
}

fn parse_timeout(s: &str) -> Result<Duration, String> {
    match parse_duration(s) {
        Some(d) if !d.is_zero() => Ok(d),
        _ => Err(format!("`{s}` is not a duration like 500ms or 3s")),
    }
}

/// Checks once and prints one line to stdout when healthy.
pub async fn run(args: Args) -> Result<(), HealthcheckError> {
    let (base, own_tls) = match args.url {
        Some(url) => (url, false),
        None => {
            let path = args
                .config
                .or_else(|| std::env::var_os("USHER_CONFIG").map(PathBuf::from))
                .unwrap_or_else(|| PathBuf::from("usher.yaml"));
            let config = Config::load_for(&path, usher::config::Purpose::Tool)?;
            let scheme = if config.tls.is_some() {
                "https"
            } else {
                "http"
            };
            (
                format!("{scheme}://{}", reachable(config.listen)),
                config.tls.is_some(),
            )
        }
    };
    let status = check_with(&base, &args.path, args.timeout, own_tls).await?;
    outln!("healthy: {} answered {status}", join(&base, &args.path));
    Ok(())
}

/// GETs `base` + `path` without proxies or redirects; Ok only for a 2xx status.
#[cfg(test)]
pub async fn check(
    base: &str,
    path: &str,
    timeout: Duration,
) -> Result<reqwest::StatusCode, HealthcheckError> {
    check_with(base, path, timeout, false).await
}

/// `check`. With `own_tls` the server is this configuration's own HTTPS listener,
/// reached on loopback: its certificate names the public host, not the loopback
/// address, and the probe asks whether the process answers, not whom to trust.
async fn check_with(
    base: &str,
    path: &str,
    timeout: Duration,
    own_tls: bool,
) -> Result<reqwest::StatusCode, HealthcheckError> {
    if !path.starts_with('/') {
        return Err(HealthcheckError::BadPath(path.to_owned()));
    }
    let url = join(base, path);
    match reqwest::Url::parse(&url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
        _ => return Err(HealthcheckError::BadUrl(base.to_owned())),
    }
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        // The probe is about this server: a proxy from the environment must not answer.
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .danger_accept_invalid_certs(own_tls)
        .build()
        .map_err(|e| HealthcheckError::Request {
            url: url.clone(),
            reason: root_cause(&e),
        })?;
    let response = client.get(&url).send().await.map_err(|e| {
        if e.is_timeout() {
            HealthcheckError::Timeout {
                url: url.clone(),
                timeout,
            }
        } else if e.is_connect() {
            HealthcheckError::Connect {
                url: url.clone(),
                reason: root_cause(&e),
            }
        } else {
            HealthcheckError::Request {
                url: url.clone(),
                reason: root_cause(&e),
            }
        }
    })?;
    let status = response.status();
    if status.is_success() {
        Ok(status)
    } else {
        Err(HealthcheckError::Status { url, status })
    }
}

fn join(base: &str, path: &str) -> String {
    format!("{}{path}", base.trim_end_matches('/'))
}

/// Where a client on this host reaches a server listening on `listen`.
fn reachable(listen: SocketAddr) -> SocketAddr {
    match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), listen.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), listen.port())
        }
        _ => listen,
    }
}

/// The innermost cause ("Connection refused (os error 111)"): reqwest's own chain
/// repeats the URL at each level, which the line already names.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unspecified_listen_addresses_are_reached_on_loopback() {
        let p = |s: &str| s.parse::<SocketAddr>().expect("addr");
        assert_eq!(reachable(p("0.0.0.0:8080")), p("127.0.0.1:8080"));
        assert_eq!(reachable(p("[::]:9000")), p("[::1]:9000"));
        assert_eq!(reachable(p("10.1.2.3:80")), p("10.1.2.3:80"));
    }

    #[test]
    fn timeouts_and_paths_are_checked() {
        assert_eq!(parse_timeout("500ms"), Ok(Duration::from_millis(500)));
        assert!(parse_timeout("0s").is_err());
        assert!(parse_timeout("soon").is_err());
        assert_eq!(
            join("http://127.0.0.1:1/", "/readyz"),
            "http://127.0.0.1:1/readyz"
        );
    }

    #[tokio::test]
    async fn refuses_what_is_not_a_url_or_a_path() {
        let t = Duration::from_secs(1);
        let e = check("127.0.0.1:8080", "/healthz", t)
            .await
            .expect_err("refused");
        assert!(matches!(e, HealthcheckError::BadUrl(_)), "{e}");
        let e = check("ftp://127.0.0.1", "/healthz", t)
            .await
            .expect_err("refused");
        assert!(matches!(e, HealthcheckError::BadUrl(_)), "{e}");
        let e = check("http://127.0.0.1:1", "healthz", t)
            .await
            .expect_err("refused");
        assert!(matches!(e, HealthcheckError::BadPath(_)), "{e}");
    }
}
