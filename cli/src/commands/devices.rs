//! `ferrum devices`: the backends on this machine, and why any is missing.

use anyhow::Result;

use crate::backends::probe_all;

pub fn run() -> Result<()> {
    for (name, backend) in probe_all() {
        match backend {
            Ok(b) => println!("{name:5} available    {}", b.device_description()),
            Err(why) => println!("{name:5} unavailable  {why}"),
        }
    }
    Ok(())
}
