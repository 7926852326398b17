//! The broker: its URL, TLS and credentials (`[fleet]`), the MQTT options both ends connect
//! with, the words for a failed connection, and the connection probe of `edge sync` and
//! `edge check`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::{
    Client, ConnectReturnCode, ConnectionError, Event, MqttOptions, Packet, TlsConfiguration,
    Transport,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::FleetError;
use crate::config::FleetConfig;

/// The largest message either end sends or takes (a frame message with its picture).
pub const MAX_PACKET_BYTES: usize = 16 << 20;

/// Where the CA certificates come from when `ca_file` is not set (Debian's bundle).
pub const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// `mqtt://HOST[:PORT]` (plain TCP, default port 1883) or `mqtts://HOST[:PORT]` (TLS, 8883).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    /// TLS (`mqtts://`).
    pub tls: bool,
    /// Host name or address.
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl BrokerUrl {
    /// Parses a broker URL.
    pub fn parse(url: &str) -> Result<BrokerUrl, String> {
        let (tls, rest) = if let Some(rest) = url.strip_prefix("mqtts://") {
            (true, rest)
        } else if let Some(rest) = url.strip_prefix("mqtt://") {
            (false, rest)
        } else {
            return Err(format!(
                "{url:?}: expected mqtt://HOST:PORT or mqtts://HOST:PORT"
            ));
        };
        let rest = rest.trim_end_matches('/');
        let (host, port) = match rest.rsplit_once(':') {
            Some((host, port)) if !host.ends_with(']') || !port.is_empty() => {
                let port = port
                    .parse::<u16>()
                    .map_err(|_| format!("{url:?}: port {port:?} is not a number"))?;
                (host, port)
            }
            _ => (rest, if tls { 8883 } else { 1883 }),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() || host.contains('/') {
            return Err(format!("{url:?}: no host"));
        }
        Ok(BrokerUrl {
            tls,
            host: host.to_string(),
            port,
        })
    }
}

impl fmt::Display for BrokerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "mqtts" } else { "mqtt" };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

/// How to reach and log in to a broker.
#[derive(Debug, Clone, PartialEq)]
pub struct BrokerSettings {
    /// The broker.
    pub url: BrokerUrl,
    /// PEM CA certificates for `mqtts://` (none: [`SYSTEM_CA_BUNDLE`]).
    pub ca_file: Option<PathBuf>,
    /// User name.
    pub username: Option<String>,
    /// Password.
    pub password: Option<String>,
    /// PEM client certificate and key, for TLS client authentication.
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

impl BrokerSettings {
    /// A broker without TLS files or credentials.
    pub fn new(url: &str) -> Result<BrokerSettings, FleetError> {
        Ok(BrokerSettings {
            url: BrokerUrl::parse(url).map_err(FleetError::Settings)?,
            ca_file: None,
            username: None,
            password: None,
            client_cert: None,
        })
    }

    /// The settings of `[fleet]` (the password file read); none when forwarding is off.
    pub fn from_config(c: &FleetConfig) -> Result<Option<BrokerSettings>, FleetError> {
        let Some(url) = &c.broker else {
            return Ok(None);
        };
        let mut s = BrokerSettings::new(url)?;
        s.ca_file = c.ca_file.clone();
        s.username = c.username.clone();
        s.password = match (&c.password, &c.password_file) {
            (Some(p), _) => Some(p.clone()),
            (None, Some(file)) => Some(read_password(file)?),
            (None, None) => None,
        };
        s.client_cert = c.client_cert.clone().zip(c.client_key.clone());
        Ok(Some(s))
    }

    /// MQTT 3.1.1 options for `client_id`: keep-alive 5 s, packets up to
    /// [`MAX_PACKET_BYTES`], TLS and credentials as configured.
    pub fn mqtt_options(&self, client_id: &str) -> Result<MqttOptions, FleetError> {
        let mut o = MqttOptions::new(client_id, self.url.host.clone(), self.url.port);
        o.set_keep_alive(Duration::from_secs(5));
        o.set_max_packet_size(MAX_PACKET_BYTES, MAX_PACKET_BYTES);
        if let Some(user) = &self.username {
            o.set_credentials(user.clone(), self.password.clone().unwrap_or_default());
        }
        if self.url.tls {
            o.set_transport(Transport::tls_with_config(self.tls()?));
        }
        Ok(o)
    }

    /// The rustls client configuration: the CA file (else the system's bundle), and the client
    /// certificate when given.
    fn tls(&self) -> Result<TlsConfiguration, FleetError> {
        let ca = self
            .ca_file
            .clone()
            .unwrap_or_else(|| PathBuf::from(SYSTEM_CA_BUNDLE));
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(&ca).map_err(|e| pem_error(&ca, e))? {
            let cert = cert.map_err(|e| pem_error(&ca, e))?;
            roots
                .add(cert)
                .map_err(|e| FleetError::Settings(format!("{}: {e}", ca.display())))?;
        }
        if roots.is_empty() {
            return Err(FleetError::Settings(format!(
                "{}: no CA certificate in it",
                ca.display()
            )));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| FleetError::Settings(format!("TLS: {e}")))?
            .with_root_certificates(roots);
        let config = match &self.client_cert {
            Some((cert, key)) => {
                let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
                    .map_err(|e| pem_error(cert, e))?
                    .collect::<Result<_, _>>()
                    .map_err(|e| pem_error(cert, e))?;
                let key = PrivateKeyDer::from_pem_file(key).map_err(|e| pem_error(key, e))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| FleetError::Settings(format!("client certificate: {e}")))?
            }
            None => builder.with_no_client_auth(),
        };
        Ok(TlsConfiguration::Rustls(Arc::new(config)))
    }
}

fn pem_error(path: &Path, e: rustls::pki_types::pem::Error) -> FleetError {
    FleetError::Settings(format!("{}: {e}", path.display()))
}

/// The first line of a password file.
fn read_password(path: &Path) -> Result<String, FleetError> {
    let text = std::fs::read_to_string(path).map_err(|source| FleetError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(text.lines().next().unwrap_or_default().to_string())
}

/// A failed connection in words a technician can act on.
pub fn describe(e: &ConnectionError) -> String {
    match e {
        ConnectionError::ConnectionRefused(code) => match code {
            ConnectReturnCode::BadUserNamePassword => {
                "the broker refused the connection: bad user name or password \
                 ([fleet] username, password or password_file)"
                    .into()
            }
            // Mosquitto answers a wrong password with this code (MQTT 3.1.1).
            ConnectReturnCode::NotAuthorized => {
                "the broker refused the connection: not authorized (bad user name or password, \
                 or a client certificate it does not accept: [fleet] username, password or \
                 password_file, client_cert)"
                    .into()
            }
            other => format!("the broker refused the connection: {other:?}"),
        },
        ConnectionError::Tls(e) => {
            format!("TLS failed: {e} (check [fleet] ca_file and the host name)")
        }
        ConnectionError::Io(e) => format!("cannot reach the broker: {e}"),
        ConnectionError::NetworkTimeout => "cannot reach the broker: timed out".into(),
        other => other.to_string(),
    }
}

/// Connects once (clean session, a throw-away client id) and waits for the broker's answer:
/// `Ok` with what was found, or why it failed (`edge sync`, `edge check`).
pub fn probe(
    settings: &BrokerSettings,
    client_id: &str,
    timeout: Duration,
) -> Result<String, String> {
    let options = settings
        .mqtt_options(client_id)
        .map_err(|e| e.to_string())?;
    let (client, mut connection) = Client::new(options, 4);
    let deadline = Instant::now() + timeout;
    let started = Instant::now();
    let result = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break Err(format!("{}: no answer within {timeout:?}", settings.url));
        }
        match connection.recv_timeout(left) {
            Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => {
                break Ok(format!(
                    "{}: connected in {} ms",
                    settings.url,
                    started.elapsed().as_millis()
                ));
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => break Err(format!("{}: {}", settings.url, describe(&e))),
            Err(_) => break Err(format!("{}: no answer within {timeout:?}", settings.url)),
        }
    };
    let _ = client.try_disconnect();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_urls_parse_with_default_ports() {
        let u = BrokerUrl::parse("mqtt://broker.local").unwrap();
        assert_eq!(
            (u.tls, u.host.as_str(), u.port),
            (false, "broker.local", 1883)
        );
        let u = BrokerUrl::parse("mqtts://10.0.0.2:9883/").unwrap();
        assert_eq!((u.tls, u.host.as_str(), u.port), (true, "10.0.0.2", 9883));
        assert_eq!(u.to_string(), "mqtts://10.0.0.2:9883");
        let u = BrokerUrl::parse("mqtts://h").unwrap();
        assert_eq!(u.port, 8883);
        for bad in ["http://h", "mqtt://", "mqtt://h:x", "h:1883"] {
            assert!(BrokerUrl::parse(bad).is_err(), "{bad}");
        }
    }
}
