//! `fc7 serve`: its flags, and the line that says where the gallery is.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::{bail, Result};
use clap::Args;

use crate::cmd::args::{IndexArg, RuntimeArgs};
use crate::serve::ServeOptions;

#[derive(Args)]
pub struct ServeArgs {
    #[command(flatten)]
    index: IndexArg,
    /// Address to listen on; only this machine can reach the default. Any other needs a token.
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// Port (0: any free one, printed).
    #[arg(long, default_value_t = 8707)]
    port: u16,
    /// A secret every request must carry (open the gallery as http://HOST:PORT/?token=…);
    /// required with a --host other than loopback. Default: $FC7_TOKEN.
    #[arg(long, env = "FC7_TOKEN", hide_env_values = true)]
    token: Option<String>,
    #[command(flatten)]
    rt: RuntimeArgs,
}

pub fn serve(a: ServeArgs, stop: Arc<AtomicBool>) -> Result<i32> {
    let token = a.token.filter(|t| !t.is_empty());
    if !a.host.is_loopback() && token.is_none() {
        bail!(
            "fc7 serve --host {}: a gallery others can reach needs a token (--token or FC7_TOKEN)",
            a.host
        );
    }
    let opts = ServeOptions {
        index: a.index.location(),
        addr: SocketAddr::new(a.host, a.port),
        embed: a.rt.embed(),
        max_pixels: a.rt.max_pixels,
        token: token.clone(),
    };
    crate::serve::run(opts, stop, |addr| {
        let query = if token.is_some() { "?token=…" } else { "" };
        println!("fc7 gallery on http://{addr}/{query} (Ctrl-C stops it)");
    })?;
    Ok(0)
}
