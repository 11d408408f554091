//! What this host offers, read with sysinfo: what an agent advertises unless
//! told otherwise.

use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HostCapacity {
    pub cpu_cores: f64,
    pub memory_mb: u64,
    /// Free space on the filesystem holding the agent's workdir.
    pub disk_mb: u64,
}

pub fn capacity(workdir: &Path) -> HostCapacity {
    let (cpu_cores, memory_mb) = match sysinfo::System::new() {
        Ok(mut sys) => {
            sys.refresh_memory();
            sys.refresh_cpu_list(sysinfo::CpuRefreshKind::nothing());
            let cores = sys.cpus().len().max(1) as f64;
            (cores, sys.total_memory() / (1024 * 1024))
        }
        Err(_) => (
            std::thread::available_parallelism().map_or(1, |n| n.get()) as f64,
            1024,
        ),
    };
    HostCapacity {
        cpu_cores,
        memory_mb,
        disk_mb: free_disk_mb(workdir),
    }
}

/// Free space under `dir` (the longest mount point that contains it).
pub fn free_disk_mb(dir: &Path) -> u64 {
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let Ok(disks) = sysinfo::Disks::new_with_refreshed_list() else {
        return 0;
    };
    (&disks)
        .into_iter()
        .filter(|d| dir.starts_with(d.mount_point()))
        .max_by_key(|d| d.mount_point().as_os_str().len())
        .map(|d| d.available_space() / (1024 * 1024))
        .unwrap_or(0)
}
