//! Where the write path's threads run on a disk whose completions all go to one CPU.
//!
//! A disk with a single hardware queue (a virtual machine's virtio disk, typically) signals
//! every completed write on the one CPU its interrupt is bound to. A thread waiting in
//! `fdatasync` on another CPU is then woken through that CPU, and on the virtual machines
//! measured that costs more than the sync itself; a writer thread sharing a CPU with the sync
//! thread delays it further (docs/benchmarks/write-path.md, "Where the sync thread runs"). So while
//! groups are small — one writer of single events, a few — the sync thread runs on the
//! interrupt's CPU and the writer on the others; so does the thread that keeps the disk awake
//! between syncs ([`super::awake`]), which waits for the disk too. Under load, when groups
//! grow, all go back to every CPU the process may use, so that the writer and the request
//! threads can spread.
//!
//! Nothing changes where the disk has a queue per CPU (NVMe), where the interrupt is not
//! bound to a single CPU, on a process allowed a single CPU, or where this cannot be read
//! (not Linux, no `/sys`).

use std::path::Path;

/// Groups averaging at most this many appends are small: the threads are placed apart.
const SMALL_GROUPS: u32 = 3;
/// Groups averaging more than this many appends: the threads go back to every CPU.
const LARGE_GROUPS: u32 = 6;
/// Fixed-point scale of the moving average of appends per group.
const SCALE: u32 = 16;

/// Places the writer (the thread that calls [`Placement::group_committed`]) and the sync
/// thread by the size of the groups they commit.
#[derive(Debug)]
pub(super) struct Placement {
    /// The CPU the disk's completions arrive on.
    irq_cpu: usize,
    /// The threads that wait for the disk: the sync thread, and the one keeping the disk
    /// awake if there is one.
    sync_threads: Vec<rustix::thread::Pid>,
    /// Whether the threads are placed apart now.
    apart: bool,
    /// Moving average of appends per group, times [`SCALE`].
    average: u32,
    /// Placing failed once: the threads stay where the scheduler puts them.
    given_up: bool,
}

impl Placement {
    /// A placement for a log on the disk that holds `file`, when that disk's completions
    /// all arrive on one CPU this process may run on, and the process may run on others too.
    pub(super) fn for_file(
        file: &Path,
        sync_threads: Vec<rustix::thread::Pid>,
    ) -> Option<Placement> {
        use std::os::unix::fs::MetadataExt;
        let dev = std::fs::metadata(file).ok()?.dev();
        let device = (rustix::fs::major(dev), rustix::fs::minor(dev));
        let irq_cpu = completion_cpu(Path::new("/sys"), Path::new("/proc"), device)?;
        let allowed = rustix::thread::sched_getaffinity(None).ok()?;
        if !allowed.is_set(irq_cpu) || allowed.count() < 2 {
            return None;
        }
        tracing::info!(
            cpu = irq_cpu,
            "the log's disk completes its writes on one CPU: while groups are small, the threads waiting for it run there and the writer on the other CPUs"
        );
        Some(Placement::new(irq_cpu, sync_threads))
    }

    /// Threads not placed yet, as if the groups so far had been large.
    fn new(irq_cpu: usize, sync_threads: Vec<rustix::thread::Pid>) -> Placement {
        Placement {
            irq_cpu,
            sync_threads,
            apart: false,
            average: LARGE_GROUPS * SCALE,
            given_up: false,
        }
    }

    /// A group of `appends` appends committed; called on the writer thread.
    pub(super) fn group_committed(&mut self, appends: usize) {
        let appends = (appends as u32).min(1024) * SCALE;
        self.average = (self.average * 7 + appends) / 8;
        let apart = if self.apart {
            self.average <= LARGE_GROUPS * SCALE
        } else {
            self.average <= SMALL_GROUPS * SCALE
        };
        if apart == self.apart || self.given_up {
            return;
        }
        match self.place(apart) {
            Ok(()) => {
                tracing::debug!(apart, "the write-ahead log's threads placed");
                self.apart = apart;
            }
            Err(e) => {
                // The process's CPUs changed under it (a cgroup's cpuset), say: back to every
                // CPU, and no more placing, rather than two failing calls per group.
                tracing::debug!(error = %e, "the write-ahead log's threads are no longer placed");
                self.given_up = true;
                if self.apart {
                    let _ = self.place(false);
                    self.apart = false;
                }
            }
        }
    }

    /// Places the writer (the calling thread) and the sync thread apart, or both on every
    /// CPU the process may use.
    fn place(&self, apart: bool) -> std::io::Result<()> {
        use rustix::thread::{CpuSet, sched_getaffinity, sched_setaffinity};
        // The process's CPUs: the main thread's (the writer's own may have been narrowed).
        let mut all = sched_getaffinity(Some(rustix::process::getpid()))?;
        if !apart {
            for &thread in &self.sync_threads {
                sched_setaffinity(Some(thread), &all)?;
            }
            return Ok(sched_setaffinity(None, &all)?);
        }
        let mut irq = CpuSet::new();
        irq.set(self.irq_cpu);
        all.unset(self.irq_cpu);
        if all.count() == 0 {
            return Err(std::io::Error::other("no CPU left for the writer"));
        }
        for &thread in &self.sync_threads {
            sched_setaffinity(Some(thread), &irq)?;
        }
        Ok(sched_setaffinity(None, &all)?)
    }

    /// Whether the threads are placed apart now.
    #[cfg(test)]
    pub(super) fn apart(&self) -> bool {
        self.apart
    }
}

/// Runs `f` (which starts a thread) with the calling thread allowed every CPU the process
/// may use, then puts the caller back where it was: a thread inherits the placement of the
/// one that starts it, and one started by a writer placed on a single CPU would share it.
pub(crate) fn on_every_cpu<T>(f: impl FnOnce() -> T) -> T {
    use rustix::thread::{sched_getaffinity, sched_setaffinity};
    let (Ok(own), Ok(all)) = (
        sched_getaffinity(None),
        sched_getaffinity(Some(rustix::process::getpid())),
    ) else {
        return f();
    };
    if own == all {
        return f();
    }
    // Best effort: a thread left where it is still does its work.
    let _ = sched_setaffinity(None, &all);
    let out = f();
    let _ = sched_setaffinity(None, &own);
    out
}

/// The one CPU that the completions of the block device `device` (major, minor) arrive
/// on, read from `sys` (sysfs) and `proc` (procfs): `None` unless the device (or the disk a
/// partition belongs to) has a single hardware queue whose busiest interrupt is bound to a
/// single CPU.
fn completion_cpu(sys: &Path, proc: &Path, device: (u32, u32)) -> Option<usize> {
    let disk = disk_of(sys, device)?;
    if std::fs::read_dir(disk.join("mq")).ok()?.count() != 1 {
        return None;
    }
    // The interrupts are the PCI function's: the first ancestor of the disk's device that
    // lists them.
    let device = std::fs::canonicalize(disk.join("device")).ok()?;
    let irqs: Vec<u32> = device
        .ancestors()
        .map(|dir| dir.join("msi_irqs"))
        .find(|dir| dir.is_dir())
        .and_then(|dir| std::fs::read_dir(dir).ok())?
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    // The request queue's interrupt is the one that fires (the others signal configuration
    // changes).
    let counts = std::fs::read_to_string(proc.join("interrupts")).ok()?;
    let busiest = irqs
        .iter()
        .filter_map(|&irq| Some((interrupt_count(&counts, irq)?, irq)))
        .max()
        .filter(|&(count, _)| count > 0)?
        .1;
    let bound =
        std::fs::read_to_string(proc.join(format!("irq/{busiest}/effective_affinity_list")))
            .ok()?;
    match cpu_list(&bound)?.as_slice() {
        [cpu] => Some(*cpu),
        _ => None,
    }
}

/// The sysfs directory of the block device `device` (major, minor) in `sys`, or of the disk
/// it is a partition of.
pub(super) fn disk_of(sys: &Path, device: (u32, u32)) -> Option<std::path::PathBuf> {
    let node = sys.join(format!("dev/block/{}:{}", device.0, device.1));
    let disk = std::fs::canonicalize(node).ok()?;
    if disk.join("partition").exists() {
        return Some(disk.parent()?.to_path_buf());
    }
    Some(disk)
}

/// The total count of interrupt `irq` in the text of `/proc/interrupts`.
fn interrupt_count(interrupts: &str, irq: u32) -> Option<u64> {
    let prefix = format!("{irq}:");
    let line = interrupts
        .lines()
        .find(|line| line.trim_start().starts_with(&prefix))?;
    let counts = line.trim_start()[prefix.len()..]
        .split_whitespace()
        .map_while(|field| field.parse::<u64>().ok());
    Some(counts.sum())
}

/// The CPUs of a list such as `0-3,8,10-11`; `None` if it does not read as one.
fn cpu_list(text: &str) -> Option<Vec<usize>> {
    let mut cpus = Vec::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((from, to)) => cpus.extend(from.parse::<usize>().ok()?..=to.parse().ok()?),
            None => cpus.push(part.parse().ok()?),
        }
    }
    Some(cpus)
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::path::PathBuf;

    use super::*;

    /// A sysfs and procfs laid out as on a virtual machine with a virtio disk `vda` (254:0,
    /// partition `vda1` 254:1) behind PCI function 0000:00:02.0, interrupts 35 and 36.
    struct Machine {
        root: tempfile::TempDir,
    }

    impl Machine {
        fn new(queues: usize, bound: &str) -> Machine {
            let root = tempfile::tempdir().expect("dir");
            let pci = root.path().join("sys/devices/pci0000:00/0000:00:02.0");
            let disk = pci.join("virtio1/block/vda");
            for q in 0..queues {
                fs::create_dir_all(disk.join(format!("mq/{q}"))).expect("mq");
            }
            fs::create_dir_all(disk.join("vda1")).expect("partition");
            fs::write(disk.join("vda1/partition"), "1\n").expect("partition");
            fs::create_dir_all(pci.join("msi_irqs/35")).expect("irq");
            fs::create_dir_all(pci.join("msi_irqs/36")).expect("irq");
            std::os::unix::fs::symlink(pci.join("virtio1"), disk.join("device")).expect("link");
            let block = root.path().join("sys/dev/block");
            fs::create_dir_all(&block).expect("dev");
            std::os::unix::fs::symlink(&disk, block.join("254:0")).expect("link");
            std::os::unix::fs::symlink(disk.join("vda1"), block.join("254:1")).expect("link");
            let proc = root.path().join("proc");
            fs::create_dir_all(proc.join("irq/36")).expect("proc");
            fs::write(
                proc.join("interrupts"),
                "           CPU0       CPU1\n \
                 35:          0          1  PCI-MSIX-0000:00:02.0   0-edge      virtio1-config\n \
                 36:         12   47309982  PCI-MSIX-0000:00:02.0   1-edge      virtio1-req.0\n",
            )
            .expect("interrupts");
            fs::write(proc.join("irq/36/effective_affinity_list"), bound).expect("affinity");
            Machine { root }
        }

        fn sys(&self) -> PathBuf {
            self.root.path().join("sys")
        }

        fn proc(&self) -> PathBuf {
            self.root.path().join("proc")
        }
    }

    #[test]
    fn a_single_queue_disk_completes_on_the_cpu_its_busiest_interrupt_is_bound_to() {
        let m = Machine::new(1, "1\n");
        assert_eq!(completion_cpu(&m.sys(), &m.proc(), (254, 0)), Some(1));
        // A partition is on its disk.
        assert_eq!(completion_cpu(&m.sys(), &m.proc(), (254, 1)), Some(1));
        // An unknown device, or none at all.
        assert_eq!(completion_cpu(&m.sys(), &m.proc(), (8, 0)), None);
    }

    #[test]
    fn a_disk_with_a_queue_per_cpu_or_an_interrupt_on_several_cpus_is_left_alone() {
        let m = Machine::new(2, "1\n");
        assert_eq!(completion_cpu(&m.sys(), &m.proc(), (254, 0)), None);
        let m = Machine::new(1, "0-1\n");
        assert_eq!(completion_cpu(&m.sys(), &m.proc(), (254, 0)), None);
    }

    #[test]
    fn cpu_lists_and_interrupt_counts_read_as_the_kernel_writes_them() {
        assert_eq!(cpu_list("0-3,8,10-11\n"), Some(vec![0, 1, 2, 3, 8, 10, 11]));
        assert_eq!(cpu_list("5"), Some(vec![5]));
        assert_eq!(cpu_list("x"), None);
        let text =
            "           CPU0       CPU1\n  9:          3          4   IO-APIC   9-fasteoi   acpi\n";
        assert_eq!(interrupt_count(text, 9), Some(7));
        assert_eq!(interrupt_count(text, 1), None);
    }

    /// A stand-in for a thread the placement places (the sync thread, the reading thread):
    /// its id, and a way to ask it where it may run.
    fn stand_in() -> (
        rustix::thread::Pid,
        impl Fn() -> rustix::thread::CpuSet + Send,
        std::thread::JoinHandle<()>,
    ) {
        use rustix::thread::sched_getaffinity;
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        let (ask_tx, ask_rx) = std::sync::mpsc::channel::<()>();
        let (cpus_tx, cpus_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            tid_tx.send(rustix::thread::gettid()).expect("tid");
            while ask_rx.recv().is_ok() {
                cpus_tx
                    .send(sched_getaffinity(None).expect("affinity"))
                    .expect("cpus");
            }
        });
        let ask = move || {
            ask_tx.send(()).expect("ask");
            cpus_rx.recv().expect("cpus")
        };
        (tid_rx.recv().expect("tid"), ask, thread)
    }

    #[test]
    fn small_groups_place_the_threads_apart_and_large_ones_bring_them_back() {
        use rustix::thread::{CpuSet, sched_getaffinity};
        let all = sched_getaffinity(None).expect("affinity");
        let Some(irq_cpu) = (0..CpuSet::MAX_CPU).filter(|&c| all.is_set(c)).nth(1) else {
            eprintln!("one CPU only: nothing to place");
            return;
        };
        let (sync_thread, sync_cpus, sync) = stand_in();
        let (reading_thread, reading_cpus, reading) = stand_in();
        // The writer: a thread of its own, so that the test's thread keeps its CPUs.
        let writer = std::thread::spawn(move || {
            let mut p = Placement::new(irq_cpu, vec![sync_thread, reading_thread]);
            let seen = |p: &Placement| {
                let writer = sched_getaffinity(None).expect("affinity");
                (p.apart(), sync_cpus(), reading_cpus(), writer)
            };
            for _ in 0..32 {
                p.group_committed(1);
            }
            let small = seen(&p);
            for _ in 0..32 {
                p.group_committed(20);
            }
            let large = seen(&p);
            (small, large)
        });
        let (small, large) = writer.join().expect("writer");
        sync.join().expect("sync");
        reading.join().expect("reading");
        let (apart, sync_small, reading_small, writer_small) = small;
        assert!(apart, "single appends place the threads apart");
        for (cpus, which) in [(sync_small, "sync"), (reading_small, "reading")] {
            assert_eq!(cpus.count(), 1, "the {which} thread on one CPU");
            assert!(
                cpus.is_set(irq_cpu),
                "the {which} thread on the interrupt's CPU"
            );
        }
        assert!(!writer_small.is_set(irq_cpu), "the writer off it");
        assert_eq!(writer_small.count() + 1, all.count());
        let (after, sync_large, reading_large, writer_large) = large;
        assert!(!after, "groups of 20 bring them back");
        assert_eq!(sync_large, all);
        assert_eq!(reading_large, all);
        assert_eq!(writer_large, all);
    }

    #[test]
    fn on_this_machine_a_log_on_a_single_queue_disk_places_its_real_sync_thread() {
        use rustix::thread::sched_getaffinity;
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("log");
        let file = || {
            std::fs::File::options()
                .create(true)
                .truncate(false)
                .read(true)
                .write(true)
                .open(&path)
                .expect("file")
        };
        let syncer = super::super::syncer::Syncer::start([file(), file()], None).expect("syncer");
        use std::os::unix::fs::MetadataExt;
        let dev = std::fs::metadata(&path).expect("meta").dev();
        let device = (rustix::fs::major(dev), rustix::fs::minor(dev));
        let found = completion_cpu(Path::new("/sys"), Path::new("/proc"), device);
        let thread = syncer.thread;
        let writer = std::thread::spawn(move || {
            let mut placement = Placement::for_file(&path, vec![thread])?;
            for _ in 0..32 {
                placement.group_committed(1);
            }
            Some((
                placement.irq_cpu,
                sched_getaffinity(None).expect("affinity"),
            ))
        });
        let Some((irq_cpu, writer_cpus)) = writer.join().expect("writer") else {
            eprintln!("{device:?} completes on {found:?}, or this process has one CPU: not placed");
            return;
        };
        assert_eq!(Some(irq_cpu), found);
        let sync_cpus = sched_getaffinity(Some(thread)).expect("affinity");
        assert_eq!(sync_cpus.count(), 1);
        assert!(
            sync_cpus.is_set(irq_cpu),
            "the real sync thread on CPU {irq_cpu}"
        );
        assert!(!writer_cpus.is_set(irq_cpu));
        drop(syncer);
    }

    #[test]
    fn a_placement_the_kernel_refuses_is_given_up_and_the_threads_keep_every_cpu() {
        use rustix::thread::sched_getaffinity;
        let all = sched_getaffinity(None).expect("affinity");
        let writer = std::thread::spawn(move || {
            // A CPU this process may not run on (or that does not exist): refused.
            let irq_cpu = (0..1024)
                .rev()
                .find(|&c| !all.is_set(c))
                .expect("a CPU not allowed");
            let mut p = Placement::new(irq_cpu, vec![rustix::thread::gettid()]);
            for _ in 0..32 {
                p.group_committed(1);
            }
            (
                p.apart,
                p.given_up,
                sched_getaffinity(None).expect("affinity"),
            )
        });
        let (apart, given_up, cpus) = writer.join().expect("writer");
        assert!(!apart && given_up);
        assert_eq!(cpus, all);
    }
}
