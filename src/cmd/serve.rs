//! `fc7 serve`: its flags, and the line that says where the gallery is.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::Result;
use clap::Args;

use crate::cmd::args::RuntimeArgs;
use crate::serve::ServeOptions;

#[derive(Args)]
pub struct ServeArgs {
    /// The index folder (default: indexes/default in fc7's home).
    #[arg(long, default_value_os_t = crate::home::default_index())]
    index: PathBuf,
    /// Address to listen on; only this machine can reach the default.
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// Port (0: any free one, printed).
    #[arg(long, default_value_t = 8707)]
    port: u16,
    #[command(flatten)]
    rt: RuntimeArgs,
}

pub fn serve(a: ServeArgs, stop: Arc<AtomicBool>) -> Result<i32> {
    let opts = ServeOptions {
        index: a.index,
        addr: SocketAddr::new(a.host, a.port),
        embed: a.rt.embed(),
        max_pixels: a.rt.max_pixels,
    };
    crate::serve::run(opts, stop, |addr| {
        println!("fc7 gallery on http://{addr}/ (Ctrl-C stops it)");
    })?;
    Ok(0)
}
