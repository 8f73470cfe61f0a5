//! `ferrum devices`: the backends on this machine, and why any is missing.

use anyhow::Result;

use ferrum_backends::{auto, probe_all};

pub fn run() -> Result<()> {
    for (name, backend) in probe_all(None) {
        match backend {
            Ok(b) => println!("{name:7} available    {}", b.device_description()),
            Err(why) => println!("{name:7} unavailable  {why}"),
        }
        // every adapter with its type and limits (the line above says why none)
        if name == "wgpu"
            && let Ok(adapters) = ferrum_backends::wgpu_adapters()
        {
            adapters.iter().for_each(|a| println!("        adapter      {a}"));
        }
    }
    println!("auto    picks        {}", auto(None).name());
    Ok(())
}
