//! The processes a training run shares its batches with: MPI's, when the command line is built
//! with `--features mpi` and started by `mpirun`; otherwise none. The library's side of it
//! (shards, the fixed-order sum, the agreement checks) is `elbo::train::distributed`.

use elbo::{Collective, Error, Result};

/// Environment variables that MPI launchers set in the processes they start (Open MPI, PMIx,
/// MPICH and Slurm's PMI).
const LAUNCHER_VARS: [&str; 3] = ["OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_SIZE"];

/// Whether this process was started by an MPI launcher.
fn launched_by_mpi() -> bool {
    LAUNCHER_VARS.iter().any(|v| std::env::var_os(v).is_some())
}

/// Processes of this job on this machine, as the launcher says: each one's share of the
/// cores when no thread count is given.
pub(crate) fn processes_on_this_machine() -> usize {
    ["OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS"]
        .iter()
        .find_map(|v| std::env::var(v).ok()?.parse().ok())
        .unwrap_or(1usize)
        .max(1)
}

/// This process's membership of its job, held for the whole command: MPI is finalised when it
/// is dropped, so it must outlive every trainer that uses the member.
pub(crate) struct Membership {
    #[cfg(feature = "mpi")]
    universe: mpi::environment::Universe,
    size: usize,
}

impl Membership {
    /// Processes in the job.
    pub(crate) fn size(&self) -> usize {
        self.size
    }

    /// Ends every process of the job at once: for a failure on this process alone, which
    /// would otherwise leave the others waiting for it in an exchange.
    pub(crate) fn abort(&self, code: i32) -> ! {
        #[cfg(feature = "mpi")]
        {
            use mpi::traits::Communicator;
            self.universe.world().abort(code)
        }
        #[cfg(not(feature = "mpi"))]
        std::process::exit(code)
    }
}

/// Joins the MPI job this process was started in, if any.
pub(crate) fn join() -> Result<Option<(Membership, Box<dyn Collective>)>> {
    if !launched_by_mpi() {
        return Ok(None);
    }
    join_mpi()
}

#[cfg(not(feature = "mpi"))]
fn join_mpi() -> Result<Option<(Membership, Box<dyn Collective>)>> {
    let size: usize = std::env::var("OMPI_COMM_WORLD_SIZE")
        .or_else(|_| std::env::var("PMI_SIZE"))
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    if size > 1 {
        return Err(Error::Unsupported(format!(
            "started by mpirun as one of {size} processes, but this elbo was built without \
             MPI: build it with `cargo build --release -p elbo-cli --features mpi`"
        )));
    }
    Ok(None)
}

#[cfg(feature = "mpi")]
fn join_mpi() -> Result<Option<(Membership, Box<dyn Collective>)>> {
    use mpi::Threading;
    use mpi::traits::Communicator;
    let (universe, threading) = mpi::initialize_with_threading(Threading::Serialized)
        .ok_or_else(|| Error::Distributed("MPI was already initialised".into()))?;
    if !matches!(threading, Threading::Serialized | Threading::Multiple) {
        return Err(Error::Distributed(format!(
            "this MPI library offers threads {threading:?}; elbo calls MPI from its training \
             thread and needs MPI_THREAD_SERIALIZED"
        )));
    }
    let world = universe.world();
    let (rank, size) = (world.rank() as usize, world.size() as usize);
    let member = MpiMember { world, rank, size };
    Ok(Some((Membership { universe, size }, Box::new(member))))
}

/// This process in MPI's world communicator.
#[cfg(feature = "mpi")]
struct MpiMember {
    world: mpi::topology::SimpleCommunicator,
    rank: usize,
    size: usize,
}

// SAFETY: MPI calls through an `MpiMember` may come from whichever thread runs the training
// loop, not only the one that initialised MPI. That is allowed at MPI_THREAD_SERIALIZED or
// above, which `join_mpi` (the only constructor) checks, provided no two calls run at once:
// every method that calls MPI takes `&mut self`, and the type is not `Sync`, so only one
// thread at a time can reach them. The communicator is MPI_COMM_WORLD, which is never freed.
#[cfg(feature = "mpi")]
unsafe impl Send for MpiMember {}

#[cfg(feature = "mpi")]
impl Collective for MpiMember {
    fn rank(&self) -> usize {
        self.rank
    }
    fn size(&self) -> usize {
        self.size
    }
    fn all_to_all(&mut self, send: &[u8], recv: &mut [u8]) -> Result<()> {
        use mpi::traits::CommunicatorCollectives;
        elbo::train::distributed::all_to_all_block(send.len(), recv.len(), self.size)?;
        self.world.all_to_all_into(send, recv);
        Ok(())
    }
    fn all_gather(&mut self, send: &[u8], recv: &mut [u8]) -> Result<()> {
        use mpi::traits::CommunicatorCollectives;
        elbo::train::distributed::check_all_gather(send.len(), recv.len(), self.size)?;
        self.world.all_gather_into(send, recv);
        Ok(())
    }
    // The two exchanges of the optimizer's slices go pairwise (round k: send to rank + k,
    // receive from rank - k), so that a member's own block is never copied and the gathered
    // slices land straight in the caller's vector.
    fn all_to_all_others(&mut self, send: &[u8], recv: &mut [u8]) -> Result<()> {
        let block = elbo::train::distributed::all_to_all_block(send.len(), recv.len(), self.size)?;
        let at = |j: usize| j * block..(j + 1) * block;
        for k in 1..self.size {
            let (to, from) = self.partners(k);
            self.send_receive(&send[at(to)], to, &mut recv[at(from)], from, TAG_ALL_TO_ALL)?;
        }
        Ok(())
    }
    fn all_gather_in_place(&mut self, buf: &mut [u8], block: usize) -> Result<()> {
        use elbo::train::distributed::{block_range, check_in_place};
        check_in_place(buf.len(), block, self.size)?;
        let (len, own) = (buf.len(), block_range(self.rank, block, buf.len()));
        for k in 1..self.size {
            let (to, from) = self.partners(k);
            let theirs = block_range(from, block, len);
            // Two different members' blocks: disjoint ranges of `buf`.
            let (mine, into) = if own.start < theirs.start {
                let (lo, hi) = buf.split_at_mut(theirs.start);
                (&lo[own.clone()], &mut hi[..theirs.len()])
            } else {
                let (lo, hi) = buf.split_at_mut(own.start);
                (&hi[..own.len()], &mut lo[theirs])
            };
            self.send_receive(mine, to, into, from, TAG_GATHER)?;
        }
        Ok(())
    }
}

/// Message tags of the pairwise exchanges, so that one can never be taken for the other.
#[cfg(feature = "mpi")]
const TAG_ALL_TO_ALL: i32 = 11;
#[cfg(feature = "mpi")]
const TAG_GATHER: i32 = 12;

#[cfg(feature = "mpi")]
impl MpiMember {
    /// Round `k`'s partners: the member this one sends to, and the one it receives from.
    fn partners(&self, k: usize) -> (usize, usize) {
        (
            (self.rank + k) % self.size,
            (self.rank + self.size - k) % self.size,
        )
    }

    /// Sends `send` to member `to` while receiving exactly `recv.len()` bytes from `from`.
    fn send_receive(
        &mut self,
        send: &[u8],
        to: usize,
        recv: &mut [u8],
        from: usize,
        tag: i32,
    ) -> Result<()> {
        use mpi::datatype::Equivalence;
        use mpi::traits::Communicator;
        let (dest, source) = (
            self.world.process_at_rank(to as i32),
            self.world.process_at_rank(from as i32),
        );
        let status =
            mpi::point_to_point::send_receive_into_with_tags(send, &dest, tag, recv, &source, tag);
        let got = status.count(u8::equivalent_datatype());
        if got as usize != recv.len() {
            return Err(elbo::Error::Distributed(format!(
                "process {from} sent {got} bytes where {} were due",
                recv.len()
            )));
        }
        Ok(())
    }
}
