//! The command line of the host commands: `labmesh probe`, `labmesh admit`, and the admission
//! floors (also flags of `labmesh agent`). Part of the names contract of `cli.rs`.

use std::path::PathBuf;

use clap::Args;

#[derive(Debug, Clone, Args)]
pub struct ProbeArgs {
    /// Print the sample as JSON (the format of GET /v1/host).
    #[arg(long)]
    pub json: bool,
}

/// What must stay free after an admitted job. Sizes: 512M, 2G, 1.5GiB (K/M/G/T are powers of
/// 1024; KB/MB/GB/TB powers of 1000).
#[derive(Debug, Clone, Default, Args)]
pub struct FloorArgs {
    /// Memory that must stay available after the job. Default: 2G.
    #[arg(long, env = "LABMESH_MIN_FREE_MEM", value_name = "SIZE")]
    pub min_free_mem: Option<String>,
    /// VRAM that must stay free on the GPU after the job. Default: 512M.
    #[arg(long, env = "LABMESH_MIN_FREE_VRAM", value_name = "SIZE")]
    pub min_free_vram: Option<String>,
    /// Disk space that must stay available after the job. Default: 5G.
    #[arg(long, env = "LABMESH_MIN_FREE_DISK", value_name = "SIZE")]
    pub min_free_disk: Option<String>,
}

impl FloorArgs {
    pub fn overrides(&self) -> labmesh::config::FloorOverrides {
        labmesh::config::FloorOverrides {
            min_free_mem: self.min_free_mem.clone(),
            min_free_vram: self.min_free_vram.clone(),
            min_free_disk: self.min_free_disk.clone(),
        }
    }
}

#[derive(Debug, Clone, Args)]
#[command(after_help = "\
Sizes: 8G = 8 GiB (K, M, G, T and KiB..TiB are powers of 1024); 20GB = 20x10^9 bytes (KB, MB, GB, TB
are powers of 1000); a bare number is bytes.

Examples:
  labmesh admit --mem 8G --vram 6G             # can this host load the model?
  labmesh admit --disk 20G --path /srv/models  # room to download it there?
  labmesh admit --mem 8G --vram 6G --anywhere  # which node can, best first")]
pub struct AdmitArgs {
    /// Memory the job needs.
    #[arg(long, value_name = "SIZE")]
    pub mem: Option<String>,
    /// VRAM the job needs, on one GPU.
    #[arg(long, value_name = "SIZE")]
    pub vram: Option<String>,
    /// Disk space the job needs, on the filesystem holding --path.
    #[arg(long, value_name = "SIZE")]
    pub disk: Option<String>,
    /// Where the job writes (need not exist yet: its nearest existing parent is measured).
    /// Default: /.
    #[arg(long, value_name = "PATH")]
    pub path: Option<PathBuf>,
    /// Rank every live node of the mesh from its gossiped summary instead of asking about this
    /// host only (needs the agent).
    #[arg(long)]
    pub anywhere: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub floors: FloorArgs,
}
