//! The flags every command shares, and the kube client they lead to.

use std::path::PathBuf;

use anyhow::{Context as _, bail};
use kube::config::{KubeConfigOptions, Kubeconfig};
use secrecy::ExposeSecret as _;

/// `-o`: a table for people, or the structured view for scripts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Output {
    #[default]
    Table,
    Json,
    Yaml,
}

impl std::str::FromStr for Output {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        match s {
            "json" => Ok(Self::Json),
            "yaml" => Ok(Self::Yaml),
            "table" | "wide" => Ok(Self::Table),
            other => bail!("unknown output format {other:?}: json, yaml or table"),
        }
    }
}

impl Output {
    /// Prints `value` as JSON or YAML (not for `Table`).
    pub fn print<T: serde::Serialize>(self, value: &T) -> anyhow::Result<()> {
        match self {
            Self::Json => println!("{}", serde_json::to_string_pretty(value)?),
            Self::Yaml => print!("{}", serde_saphyr::to_string(value)?),
            Self::Table => bail!("a table is printed by the command"),
        }
        Ok(())
    }
}

/// kubectl's global flags.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Common {
    pub kubeconfig: Option<PathBuf>,
    pub context: Option<String>,
    pub namespace: Option<String>,
    pub all_namespaces: bool,
    pub output: Output,
}

/// Splits `--flag=value` and `-ovalue` forms so that one loop handles both.
fn split(arg: &str) -> (&str, Option<&str>) {
    if let Some((flag, value)) = arg.split_once('=').filter(|_| arg.starts_with("--")) {
        return (flag, Some(value));
    }
    for short in ["-n", "-o"] {
        if let Some(value) = arg.strip_prefix(short).filter(|v| !v.is_empty()) {
            return (short, Some(value));
        }
    }
    (arg, None)
}

impl Common {
    /// Takes the shared flags out of `args`; returns the rest, in order, with each of the
    /// command's own flags (`own`, which take a value) kept with its value.
    pub fn parse(args: &[String], own: &[&str]) -> anyhow::Result<(Self, Vec<String>)> {
        let mut c = Self::default();
        let mut rest = Vec::new();
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            let (flag, inline) = split(arg);
            let mut value = || -> anyhow::Result<String> {
                match inline {
                    Some(v) => Ok(v.to_owned()),
                    None => it
                        .next()
                        .cloned()
                        .with_context(|| format!("{flag} needs a value")),
                }
            };
            match flag {
                "--kubeconfig" => c.kubeconfig = Some(value()?.into()),
                "--context" => c.context = Some(value()?),
                "-n" | "--namespace" => c.namespace = Some(value()?),
                "-A" | "--all-namespaces" => c.all_namespaces = true,
                "-o" | "--output" => c.output = value()?.parse()?,
                f if own.contains(&f) => {
                    rest.push(f.to_owned());
                    rest.push(value()?);
                }
                _ => rest.push(arg.clone()),
            }
        }
        Ok((c, rest))
    }

    /// The client configuration kubectl would use: `--kubeconfig`, else `KUBECONFIG` or
    /// `~/.kube/config` (else, in a Pod, its ServiceAccount), with `--context`.
    pub async fn config(&self) -> anyhow::Result<kube::Config> {
        let options = KubeConfigOptions {
            context: self.context.clone(),
            ..KubeConfigOptions::default()
        };
        Ok(match (&self.kubeconfig, &self.context) {
            (Some(path), _) => {
                let file = Kubeconfig::read_from(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                kube::Config::from_custom_kubeconfig(file, &options).await?
            }
            (None, Some(_)) => kube::Config::from_kubeconfig(&options).await?,
            (None, None) => kube::Config::infer()
                .await
                .context("no kubeconfig found (KUBECONFIG, ~/.kube/config or --kubeconfig)")?,
        })
    }

    pub async fn client(&self) -> anyhow::Result<(kube::Client, kube::Config)> {
        let config = self.config().await?;
        let client = kube::Client::try_from(config.clone()).context("building the client")?;
        Ok((client, config))
    }

    /// `-n`, else the context's namespace.
    pub fn namespace(&self, config: &kube::Config) -> String {
        self.namespace
            .clone()
            .unwrap_or_else(|| config.default_namespace.clone())
    }
}

/// The bearer token the kubeconfig's user authenticates with (`token` or `tokenFile`).
pub fn bearer_token(config: &kube::Config) -> anyhow::Result<Option<String>> {
    if let Some(t) = &config.auth_info.token {
        return Ok(Some(t.expose_secret().trim().to_owned()));
    }
    if let Some(file) = &config.auth_info.token_file {
        let t = std::fs::read_to_string(file).with_context(|| format!("reading {file}"))?;
        return Ok(Some(t.trim().to_owned()));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn shared_flags_in_kubectls_spellings() {
        let (c, rest) = Common::parse(
            &args("tpss/a -n team --context=prod -ojson --wait --timeout 30s"),
            &["--timeout"],
        )
        .unwrap();
        assert_eq!(c.namespace.as_deref(), Some("team"));
        assert_eq!(c.context.as_deref(), Some("prod"));
        assert_eq!(c.output, Output::Json);
        assert_eq!(rest, args("tpss/a --wait --timeout 30s"));

        let (c, rest) =
            Common::parse(&args("-A --output yaml --kubeconfig /k --namespace=x"), &[]).unwrap();
        assert!(c.all_namespaces);
        assert_eq!(c.output, Output::Yaml);
        assert_eq!(c.kubeconfig, Some("/k".into()));
        assert_eq!(c.namespace.as_deref(), Some("x"));
        assert!(rest.is_empty());
    }

    #[test]
    fn the_bearer_token_comes_from_token_or_token_file() {
        let mut config = kube::Config::new("https://127.0.0.1:6443".parse().unwrap());
        assert_eq!(
            bearer_token(&config).unwrap(),
            None,
            "certificates: no token"
        );
        config.auth_info = serde_json::from_value(serde_json::json!({"token": "abc"})).unwrap();
        assert_eq!(bearer_token(&config).unwrap().as_deref(), Some("abc"));
        let file = std::env::temp_dir().join(format!("tidepool-cli-token-{}", std::process::id()));
        std::fs::write(&file, "from-file\n").unwrap();
        config.auth_info = serde_json::from_value(serde_json::json!({"tokenFile": file})).unwrap();
        let read = bearer_token(&config);
        std::fs::remove_file(&file).unwrap();
        assert_eq!(read.unwrap().as_deref(), Some("from-file"));
    }

    #[test]
    fn bad_flags_are_refused_with_the_reason() {
        let e = Common::parse(&args("-o xml"), &[]).unwrap_err();
        assert!(e.to_string().contains("unknown output format"), "{e}");
        let e = Common::parse(&args("-n"), &[]).unwrap_err();
        assert!(e.to_string().contains("-n needs a value"), "{e}");
    }
}
