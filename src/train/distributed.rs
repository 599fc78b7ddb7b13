//! Data-parallel training across processes, with results that do not depend on how many.
//!
//! Each global batch is cut into a fixed number of shards `S` (a setting of the run, not of the
//! machine). Each shard's gradient is computed alone, as if it were a batch of its own, and the
//! `S` gradients are added in one fixed binary tree: adjacent pairs, then adjacent pairs of
//! those, an odd node carried up unchanged. With `P` processes each one computes `S / P`
//! adjacent shards and adds them in its own subtree; when `S / P` is a power of two those
//! subtrees are exactly the tree's nodes one level up, so finishing the tree over the `P`
//! partial sums gives every floating-point addition the same operands, in the same order, as
//! one process computing all `S`. That is why a run gives bit-identical parameters on 1, 2, 4
//! or 8 processes for the same `S`.
//!
//! After the sum, when the update is elementwise (no gradient clipping, no batch-normalisation
//! averages riding in the gradient), each process applies the optimizer to its own slice of the
//! parameters and of the optimizer's state, the slice its all-to-all gave it, and the processes
//! all-gather the parameters; the state's slices are shared at each epoch's end. Each process
//! does 1/P of the optimizer's work, and the bits are those of one process updating all.
//!
//! The library knows nothing of MPI: a process group is anything that implements
//! [`Collective`]. The command line implements it over MPI (`--features mpi`);
//! [`InProcess`] implements it over threads, for tests and for trying the scheme without MPI.

use std::ops::Range;
use std::sync::{Arc, Barrier, Mutex};

use crate::error::{Error, Result};
use crate::kernels::par::{self, Disjoint};
use crate::kernels::scalar::Float;

/// A group of processes that exchange equal-sized byte blocks: what data-parallel training
/// needs of MPI, and all of it. Every member must make the same calls in the same order with
/// the same lengths, as with MPI's collectives.
pub trait Collective: Send {
    /// This member's place in the group, from 0.
    fn rank(&self) -> usize;
    /// Members in the group.
    fn size(&self) -> usize;
    /// `send` is `size()` equal blocks, the j-th for member j. On return `recv` (as long as
    /// `send`) holds the blocks addressed to this member, in member order (MPI_Alltoall).
    fn all_to_all(&mut self, send: &[u8], recv: &mut [u8]) -> Result<()>;
    /// Every member's `send` (of one length on all members), concatenated in member order
    /// into `recv` (MPI_Allgather).
    fn all_gather(&mut self, send: &[u8], recv: &mut [u8]) -> Result<()>;

    /// [`all_to_all`](Self::all_to_all) for a member that keeps its own block where it is:
    /// block `rank()` of `recv` need not be written (and is unspecified afterwards), so an
    /// implementation may skip copying it. By default, the all-to-all itself.
    fn all_to_all_others(&mut self, send: &[u8], recv: &mut [u8]) -> Result<()> {
        self.all_to_all(send, recv)
    }

    /// An all-gather in place (MPI_Allgather with MPI_IN_PLACE): member `j`'s block is
    /// [`block_range`]`(j, block, buf.len())`, so the last blocks may be short or empty. Each
    /// member fills in its own block; on return every member holds every block, and no block
    /// is copied beside `buf`. By default, through [`all_gather`](Self::all_gather) and two
    /// scratch copies.
    fn all_gather_in_place(&mut self, buf: &mut [u8], block: usize) -> Result<()> {
        let (p, me) = (self.size(), self.rank());
        check_in_place(buf.len(), block, p)?;
        let own = block_range(me, block, buf.len());
        let mut send = vec![0u8; block];
        send[..own.len()].copy_from_slice(&buf[own]);
        let mut all = vec![0u8; block * p];
        self.all_gather(&send, &mut all)?;
        let n = buf.len();
        buf.copy_from_slice(&all[..n]);
        Ok(())
    }
}

/// Member `j`'s block of an in-place all-gather of `len` bytes in blocks of `block`:
/// `j * block..(j + 1) * block`, clamped to `len`.
pub fn block_range(j: usize, block: usize, len: usize) -> Range<usize> {
    let start = j.saturating_mul(block).min(len);
    start..j.saturating_add(1).saturating_mul(block).min(len)
}

/// Checks the lengths of an in-place all-gather of `len` bytes in blocks of `block` on `size`
/// members, as every [`Collective`] must: the blocks cover `len`, and a block fits an MPI count.
pub fn check_in_place(len: usize, block: usize, size: usize) -> Result<()> {
    if size == 0 || block.checked_mul(size).is_none_or(|all| all < len) || block > i32::MAX as usize
    {
        return Err(Error::Distributed(format!(
            "an in-place all-gather of {len} bytes in blocks of {block} on {size} members"
        )));
    }
    Ok(())
}

/// Checks the lengths of an all-to-all of `send` bytes into `recv` on `size` members, as every
/// [`Collective`] must, and returns the block each member sends each other. Blocks are at most
/// `i32::MAX` bytes: MPI counts are C ints.
pub fn all_to_all_block(send: usize, recv: usize, size: usize) -> Result<usize> {
    let fits = size > 0 && send == recv && send.is_multiple_of(size);
    if !fits || send / size > i32::MAX as usize {
        return Err(Error::Distributed(format!(
            "an all-to-all of {send} bytes into {recv} on {size} members"
        )));
    }
    Ok(send / size)
}

/// Checks the lengths of an all-gather of `send` bytes from each of `size` members into `recv`,
/// as every [`Collective`] must.
pub fn check_all_gather(send: usize, recv: usize, size: usize) -> Result<()> {
    if Some(recv) != send.checked_mul(size) || send > i32::MAX as usize {
        return Err(Error::Distributed(format!(
            "an all-gather of {send} bytes from each of {size} members into {recv}"
        )));
    }
    Ok(())
}

/// A group of one: every exchange is a copy.
#[derive(Clone, Copy, Debug, Default)]
pub struct SingleProcess;

impl Collective for SingleProcess {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn all_to_all(&mut self, send: &[u8], recv: &mut [u8]) -> Result<()> {
        all_to_all_block(send.len(), recv.len(), 1)?;
        recv.copy_from_slice(send);
        Ok(())
    }
    fn all_gather(&mut self, send: &[u8], recv: &mut [u8]) -> Result<()> {
        check_all_gather(send.len(), recv.len(), 1)?;
        recv.copy_from_slice(send);
        Ok(())
    }
    fn all_to_all_others(&mut self, send: &[u8], recv: &mut [u8]) -> Result<()> {
        all_to_all_block(send.len(), recv.len(), 1).map(|_| ())
    }
    fn all_gather_in_place(&mut self, buf: &mut [u8], block: usize) -> Result<()> {
        check_in_place(buf.len(), block, 1)
    }
}

/// Members of a group that live in one process, one per thread: each thread owns one member and
/// its own [`Trainer`](super::Trainer). Exchanges meet at a barrier, so every member must take
/// part in every exchange (as with MPI); a member that stops early leaves the others waiting.
#[derive(Debug)]
pub struct InProcess {
    rank: usize,
    shared: Arc<InProcessShared>,
}

#[derive(Debug)]
struct InProcessShared {
    barrier: Barrier,
    slots: Mutex<Vec<Vec<u8>>>,
}

impl InProcess {
    /// A group of `size` members, to be handed one to each thread.
    pub fn group(size: usize) -> Result<Vec<InProcess>> {
        if size == 0 {
            return Err(Error::config("group size", 0, "must be at least 1"));
        }
        let shared = Arc::new(InProcessShared {
            barrier: Barrier::new(size),
            slots: Mutex::new(vec![Vec::new(); size]),
        });
        Ok((0..size)
            .map(|rank| InProcess {
                rank,
                shared: shared.clone(),
            })
            .collect())
    }

    /// Posts `send`, waits for every member's, lets `read` take what it needs from all of
    /// them, and waits again so that no member's next post overwrites a slot being read.
    fn exchange(&mut self, send: &[u8], read: impl FnOnce(&[Vec<u8>])) -> Result<()> {
        fn lock(s: &InProcessShared) -> Result<std::sync::MutexGuard<'_, Vec<Vec<u8>>>> {
            s.slots
                .lock()
                .map_err(|_| Error::Unsupported("a member of the group panicked".into()))
        }
        {
            let mut slots = lock(&self.shared)?;
            slots[self.rank].clear();
            slots[self.rank].extend_from_slice(send);
        }
        self.shared.barrier.wait();
        read(&lock(&self.shared)?);
        self.shared.barrier.wait();
        Ok(())
    }
}

impl Collective for InProcess {
    fn rank(&self) -> usize {
        self.rank
    }
    fn size(&self) -> usize {
        self.shared.slots.lock().map(|s| s.len()).unwrap_or(1)
    }
    fn all_to_all(&mut self, send: &[u8], recv: &mut [u8]) -> Result<()> {
        self.blocks_to_all(send, recv, true)
    }
    fn all_to_all_others(&mut self, send: &[u8], recv: &mut [u8]) -> Result<()> {
        self.blocks_to_all(send, recv, false)
    }
    fn all_gather_in_place(&mut self, buf: &mut [u8], block: usize) -> Result<()> {
        let me = self.rank;
        check_in_place(buf.len(), block, self.size())?;
        let (len, own) = (buf.len(), block_range(me, block, buf.len()));
        let mut bad = false;
        let mine = buf[own].to_vec();
        self.exchange(&mine, |slots| {
            for (j, s) in slots.iter().enumerate().filter(|&(j, _)| j != me) {
                let r = block_range(j, block, len);
                if s.len() == r.len() {
                    buf[r].copy_from_slice(s);
                } else {
                    bad = true;
                }
            }
        })?;
        if bad {
            Err(mismatched_blocks())
        } else {
            Ok(())
        }
    }
    fn all_gather(&mut self, send: &[u8], recv: &mut [u8]) -> Result<()> {
        check_all_gather(send.len(), recv.len(), self.size())?;
        let block = send.len();
        let mut bad = false;
        self.exchange(send, |slots| {
            for (i, s) in slots.iter().enumerate() {
                if s.len() == block {
                    recv[i * block..(i + 1) * block].copy_from_slice(s);
                } else {
                    bad = true;
                }
            }
        })?;
        if bad {
            Err(mismatched_blocks())
        } else {
            Ok(())
        }
    }
}

/// What an [`InProcess`] exchange reports when members sent blocks of different lengths.
fn mismatched_blocks() -> Error {
    Error::Unsupported("members of the group exchanged blocks of different lengths".into())
}

impl InProcess {
    /// An all-to-all; `own` says whether this member's own block is copied too.
    fn blocks_to_all(&mut self, send: &[u8], recv: &mut [u8], own: bool) -> Result<()> {
        let block = all_to_all_block(send.len(), recv.len(), self.size())?;
        let me = self.rank;
        let mut bad = false;
        self.exchange(send, |slots| {
            for (i, s) in slots.iter().enumerate().filter(|&(i, _)| own || i != me) {
                match s.get(me * block..(me + 1) * block) {
                    Some(b) => recv[i * block..(i + 1) * block].copy_from_slice(b),
                    None => bad = true,
                }
            }
        })?;
        if bad {
            Err(mismatched_blocks())
        } else {
            Ok(())
        }
    }
}

/// Adds `m = buf.len() / len` vectors of `len` stored one after another, in the fixed pairwise
/// tree (node `i` absorbs node `i + w` for strides `w` = 1, 2, 4, ...); the sum is left in the
/// first `len` elements. Every caller that must agree bit for bit adds through this.
pub fn pairwise_tree_sum<T: Float>(buf: &mut [T], len: usize) {
    if len == 0 {
        return;
    }
    let m = buf.len() / len;
    let nodes = Disjoint::new(&mut buf[..m * len]);
    tree_levels(m, len, |j| (&nodes, j * len), None);
}

/// The tree of [`pairwise_tree_sum`] over `m` nodes of `len` where node `own` is `mine` and
/// every other node `j` is `others[j * len..(j + 1) * len]` (whose block `own` is not read),
/// with the last addition written to `out` (its first `out.len()` elements): a member's own
/// partial sum is not copied beside the ones it received, nor the total to where it is used.
/// The nodes are left overwritten.
pub(crate) fn pairwise_tree_sum_split<T: Float>(
    mine: &mut [T],
    others: &mut [T],
    own: usize,
    len: usize,
    out: &mut [T],
) {
    let m = others.len() / len.max(1);
    if len == 0 || mine.len() < len || own >= m {
        return;
    }
    let (mine, others) = (Disjoint::new(&mut mine[..len]), Disjoint::new(&mut *others));
    let node = |j| {
        if j == own {
            (&mine, 0)
        } else {
            (&others, j * len)
        }
    };
    tree_levels(m, len, node, Some(&Disjoint::new(out)));
}

/// Every level of the tree over `m` nodes of `len` elements, node `j` being `len` elements of
/// the buffer `node(j).0` from offset `node(j).1`; distinct nodes must not overlap. The total
/// stays in node 0, or with `out`, the last addition is written there instead (out's elements
/// past `len` untouched, node 0's past `out`'s length dropped). In parallel over ranges of
/// elements, each taking every level for its range: each element's additions are the same, in
/// the same order, however the range is cut.
fn tree_levels<'b, 'a: 'b, T: Float>(
    m: usize,
    len: usize,
    node: impl Fn(usize) -> (&'b Disjoint<'a, T>, usize) + Sync,
    out: Option<&Disjoint<'_, T>>,
) {
    if m == 0 || len == 0 {
        return;
    }
    par::for_each_task(len.div_ceil(TREE_CHUNK), |t| {
        let (e0, e1) = (t * TREE_CHUNK, ((t + 1) * TREE_CHUNK).min(len));
        // SAFETY (every piece below): task t alone touches elements e0..e1 of every node and of
        // `out`; nodes i and i + w are different nodes, which the callers lay out without
        // overlap, and `out` is a buffer of its own.
        if m == 1 {
            if let Some(out) = out {
                let (n0, o0) = node(0);
                let (o, a) = unsafe { (out.piece(e0, e1), n0.piece(o0 + e0, o0 + e1)) };
                o.copy_from_slice(&a[..o.len()]);
            }
            return;
        }
        let mut w = 1;
        while w < m {
            let mut i = 0;
            while i + w < m {
                let ((na, oa), (nb, ob)) = (node(i), node(i + w));
                let (a, b) = unsafe { (na.piece(oa + e0, oa + e1), nb.piece(ob + e0, ob + e1)) };
                match out {
                    Some(out) if 2 * w >= m => {
                        let o = unsafe { out.piece(e0, e1) };
                        for ((o, &x), &y) in o.iter_mut().zip(a.iter()).zip(b.iter()) {
                            *o = x + y;
                        }
                    }
                    _ => {
                        for (x, &y) in a.iter_mut().zip(b.iter()) {
                            *x += y;
                        }
                    }
                }
                i += 2 * w;
            }
            w *= 2;
        }
    });
}

/// Elements per task of [`pairwise_tree_sum`].
const TREE_CHUNK: usize = 1 << 15;

/// How a run's global batches are cut and which shards this process computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShardPlan {
    /// Shards per global batch.
    pub shards: usize,
    /// Processes in the group.
    pub procs: usize,
    /// This process's place.
    pub rank: usize,
}

impl ShardPlan {
    /// Checks that `shards` can be shared by `procs` processes so that the result does not
    /// depend on `procs`: `shards` a multiple of `procs`, and `shards / procs` a power of two
    /// (or one process, which computes the whole tree itself).
    pub fn new(shards: usize, procs: usize, rank: usize) -> Result<Self> {
        if shards == 0 {
            return Err(Error::config("shards", 0, "must be at least 1"));
        }
        if procs == 0 || rank >= procs {
            return Err(Error::config(
                "process rank",
                rank,
                "must be below the group's size",
            ));
        }
        if !shards.is_multiple_of(procs) || (procs > 1 && !(shards / procs).is_power_of_two()) {
            return Err(Error::config(
                "shards",
                shards,
                "must be the number of processes times a power of two (1, 2, 4, ...), so \
                 that the sum is the same on any number of processes: 8 serves 1, 2, 4 or 8",
            ));
        }
        Ok(ShardPlan {
            shards,
            procs,
            rank,
        })
    }

    /// Shards computed by this process.
    pub fn local(&self) -> Range<usize> {
        let l = self.shards / self.procs;
        self.rank * l..(self.rank + 1) * l
    }

    /// The rows (positions in a global batch of `rows`) of shard `s`: as even as they can be,
    /// the same however many processes there are.
    pub fn rows(&self, s: usize, rows: usize) -> Range<usize> {
        s * rows / self.shards..(s + 1) * rows / self.shards
    }

    /// The stream index of shard `s` in step `step` (1-based), for its noise, masks and
    /// binarisation: `step` itself when there is one shard, so that a one-shard run draws
    /// what an unsharded one does.
    pub fn stream_index(&self, step: u64, s: usize) -> u64 {
        (step - 1)
            .wrapping_mul(self.shards as u64)
            .wrapping_add(s as u64 + 1)
    }
}

/// A 64-bit FNV-1a fingerprint: small, stable across platforms and versions, enough to tell
/// whether processes hold the same settings, data and parameters.
#[derive(Clone, Copy, Debug)]
pub struct Fingerprint(u64);

impl Default for Fingerprint {
    fn default() -> Self {
        Fingerprint(0xcbf2_9ce4_8422_2325)
    }
}

impl Fingerprint {
    /// Mixes in `bytes`.
    pub fn add(&mut self, bytes: &[u8]) -> &mut Self {
        for &b in bytes {
            self.0 ^= b as u64;
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
        self
    }
    /// The fingerprint so far.
    pub fn value(&self) -> u64 {
        self.0
    }
}

/// Checks that every member of `group` gave the same `parts` (named fingerprints, the same
/// names in the same order everywhere), and names the members and parts that differ.
pub fn check_agreement(group: &mut dyn Collective, parts: &[(&str, u64)]) -> Result<()> {
    let p = group.size();
    let local: Vec<u8> = parts.iter().flat_map(|(_, v)| v.to_le_bytes()).collect();
    let mut all = vec![0u8; local.len() * p];
    group.all_gather(&local, &mut all)?;
    let value = |rank: usize, k: usize| {
        let o = (rank * parts.len() + k) * 8;
        u64::from_le_bytes(all[o..o + 8].try_into().unwrap_or_default())
    };
    let mut differ = Vec::new();
    for (k, (name, _)) in parts.iter().enumerate() {
        let ranks: Vec<String> = (1..p)
            .filter(|&r| value(r, k) != value(0, k))
            .map(|r| r.to_string())
            .collect();
        if !ranks.is_empty() {
            differ.push(format!("{name} (process {} against 0)", ranks.join(", ")));
        }
    }
    if differ.is_empty() {
        Ok(())
    } else {
        Err(Error::Distributed(format!(
            "the processes disagree before training: {}; start every process with the same \
             command, data and checkpoint",
            differ.join("; ")
        )))
    }
}

/// Buffers of a sharded step, sized once for a model of `n` parameters.
#[derive(Debug)]
pub(crate) struct ShardBuffers<T> {
    pub(crate) plan: ShardPlan,
    /// The local shards' gradients, each `padded` long, one after another.
    pub(crate) leaves: Vec<T>,
    /// `n` rounded up to a multiple of the group's size.
    pub(crate) padded: usize,
    /// The other members' partial sums of this process's slice of the gradient, in member
    /// order (this member's own block unused: its partial sum stays in `leaves`).
    pub(crate) recv: Vec<T>,
    /// Per local shard: rows, then rows x each of recon, kl, bound and loss.
    pub(crate) stats: Vec<f64>,
    /// The same for every shard.
    pub(crate) all_stats: Vec<f64>,
}

/// Figures a shard reports besides its gradient.
pub(crate) const SHARD_STATS: usize = 5;

impl<T: Float> ShardBuffers<T> {
    pub(crate) fn new(plan: ShardPlan, n: usize) -> Self {
        let p = plan.procs;
        let padded = n.div_ceil(p) * p;
        let local = plan.local().len();
        ShardBuffers {
            plan,
            leaves: vec![T::zero(); local * padded],
            padded,
            recv: vec![T::zero(); if p > 1 { padded } else { 0 }],
            stats: vec![0.0; local * SHARD_STATS],
            all_stats: vec![0.0; plan.shards * SHARD_STATS],
        }
    }

    /// Elements of each member's slice.
    fn chunk(&self) -> usize {
        self.padded / self.plan.procs
    }

    /// Adds the local leaves, then the group's partial sums, in the fixed tree; writes the
    /// total into `out` (n long). Every process ends with the same bits.
    pub(crate) fn reduce(&mut self, group: &mut dyn Collective, out: &mut [T]) -> Result<()> {
        let p = self.plan.procs;
        if p == 1 {
            pairwise_tree_sum(&mut self.leaves, self.padded);
            self.share_stats(group)?;
            let sum = &self.leaves;
            par::for_each_piece(out, TREE_CHUNK, |at, o| {
                o.copy_from_slice(&sum[at..at + o.len()])
            });
            return Ok(());
        }
        // Each process finishes the tree for one slice of the vector (all-to-all), then the
        // slices are shared (all-gather): 2 (P - 1) / P of the gradient sent, as a ring
        // all-reduce, but in a fixed order.
        let mine = self.slice(out.len());
        self.reduce_slice(group, &mut out[mine])?;
        self.share_slices(group, out)
    }

    /// Every shard's figures to every process.
    fn share_stats(&mut self, group: &mut dyn Collective) -> Result<()> {
        group.all_gather(
            bytemuck::cast_slice(&self.stats),
            bytemuck::cast_slice_mut(&mut self.all_stats),
        )
    }

    /// [`reduce`](Self::reduce) up to the all-to-all: writes the total for this process's
    /// slice alone, [`slice`](Self::slice)`(n)` of an `n`-long vector, into `out` (that slice's
    /// length; it may be empty). For a group of more than one.
    pub(crate) fn reduce_slice(&mut self, group: &mut dyn Collective, out: &mut [T]) -> Result<()> {
        let (padded, chunk, rank) = (self.padded, self.chunk(), self.plan.rank);
        pairwise_tree_sum(&mut self.leaves, padded);
        self.share_stats(group)?;
        group.all_to_all_others(
            bytemuck::cast_slice(&self.leaves[..padded]),
            bytemuck::cast_slice_mut(&mut self.recv),
        )?;
        let own = &mut self.leaves[rank * chunk..(rank + 1) * chunk];
        pairwise_tree_sum_split(own, &mut self.recv, rank, chunk, out);
        Ok(())
    }

    /// This process's slice of an `n`-long vector: its all-to-all block, clamped to `n`.
    pub(crate) fn slice(&self, n: usize) -> Range<usize> {
        block_range(self.plan.rank, self.chunk(), n)
    }

    /// Every member's slice of `v` (`n` long), as each member has it, copied to every member
    /// in place: after it, all hold the same `v`.
    pub(crate) fn share_slices(&mut self, group: &mut dyn Collective, v: &mut [T]) -> Result<()> {
        let block = self.chunk() * std::mem::size_of::<T>();
        group.all_gather_in_place(bytemuck::cast_slice_mut(v), block)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exchange_lengths_are_checked_for_every_group() {
        assert_eq!(all_to_all_block(12, 12, 3).unwrap(), 4);
        assert!(all_to_all_block(12, 8, 3).is_err());
        assert!(all_to_all_block(10, 10, 3).is_err());
        assert!(all_to_all_block(4, 4, 0).is_err());
        assert!(check_all_gather(4, 12, 3).is_ok());
        assert!(check_all_gather(4, 8, 3).is_err());
        assert!(check_all_gather(usize::MAX, 0, 2).is_err());
        let mut g = InProcess::group(1).unwrap().pop().unwrap();
        assert!(matches!(
            g.all_to_all(&[0; 4], &mut [0; 3]),
            Err(Error::Distributed(_))
        ));
        assert!(g.all_gather(&[0; 4], &mut [0; 5]).is_err());
    }

    /// The parallel tree against the plain loop it replaced, bit for bit, on vectors long
    /// enough for several tasks (and a last short one), with an odd number of nodes and values
    /// whose sums round differently in different orders; inside a two-thread pool.
    #[test]
    fn the_parallel_tree_is_the_plain_loop() {
        let plain = |buf: &mut [f32], len: usize| {
            let m = buf.len() / len;
            let mut w = 1;
            while w < m {
                let mut i = 0;
                while i + w < m {
                    for e in 0..len {
                        let y = buf[(i + w) * len + e];
                        buf[i * len + e] += y;
                    }
                    i += 2 * w;
                }
                w *= 2;
            }
        };
        let len = 3 * TREE_CHUNK + 17;
        let big = [1e8f32, 1.0, -3.0, 1.0, -1e8, 0.5, 7.0];
        let nodes: Vec<f32> = (0..big.len() * len)
            .map(|i| big[i / len] + (i % 977) as f32 * 0.125)
            .collect();
        let mut want = nodes.clone();
        plain(&mut want, len);
        let pool = crate::kernels::pool::ThreadPool::new(2).unwrap();
        let mut got = nodes.clone();
        pool.install(|| pairwise_tree_sum(&mut got, len));
        assert!(
            got[..len]
                .iter()
                .zip(&want[..len])
                .all(|(a, b)| a.to_bits() == b.to_bits())
        );
    }

    #[test]
    fn the_tree_with_its_own_node_apart_is_the_tree_over_one_buffer() {
        // Magnitudes whose sums round differently when the pairs change.
        let big = [1e8f32, 1.0, -3.0, 1.0, -1e8, 0.5, 7.0, -2.5];
        let len = TREE_CHUNK + 5;
        for m in 1..=big.len() {
            let nodes: Vec<f32> = (0..m * len)
                .map(|i| big[i / len] + (i % 977) as f32 * 0.125)
                .collect();
            let mut want = nodes.clone();
            pairwise_tree_sum(&mut want, len);
            for own in 0..m {
                let mut mine = nodes[own * len..(own + 1) * len].to_vec();
                let mut others = nodes.clone();
                // The own block of `others` is not read: poison it.
                others[own * len..(own + 1) * len].fill(f32::NAN);
                // The total lands in `out`, up to its length (here a padded slice's).
                let mut got = vec![f32::NAN; len - 3];
                pairwise_tree_sum_split(&mut mine, &mut others, own, len, &mut got);
                assert!(
                    got.iter()
                        .zip(&want)
                        .all(|(a, b)| a.to_bits() == b.to_bits()),
                    "{m} nodes, own node {own}"
                );
            }
        }
    }

    /// A group that implements only the required exchanges, so that the trait's own
    /// in-place forms are the ones used.
    struct Plain(InProcess);

    impl Collective for Plain {
        fn rank(&self) -> usize {
            self.0.rank()
        }
        fn size(&self) -> usize {
            self.0.size()
        }
        fn all_to_all(&mut self, send: &[u8], recv: &mut [u8]) -> Result<()> {
            self.0.all_to_all(send, recv)
        }
        fn all_gather(&mut self, send: &[u8], recv: &mut [u8]) -> Result<()> {
            self.0.all_gather(send, recv)
        }
    }

    #[test]
    fn in_place_exchanges_give_every_member_every_block() {
        // 3 members, blocks of 4 bytes over 10 (the last block short) and over 7 (the last
        // block empty).
        for len in [10usize, 7, 12] {
            for plain in [false, true] {
                let members = InProcess::group(3).unwrap();
                let results: Vec<(Vec<u8>, Vec<u8>)> = std::thread::scope(|s| {
                    let handles: Vec<_> = members
                        .into_iter()
                        .map(|m| {
                            s.spawn(move || {
                                let r = m.rank();
                                let mut g: Box<dyn Collective> = if plain {
                                    Box::new(Plain(m))
                                } else {
                                    Box::new(m)
                                };
                                let mut buf = vec![0xEEu8; len];
                                for i in block_range(r, 4, len) {
                                    buf[i] = i as u8;
                                }
                                g.all_gather_in_place(&mut buf, 4).unwrap();
                                // Block j of member r's send is 10 r + j.
                                let send: Vec<u8> =
                                    (0..12).map(|i| (10 * r + i / 4) as u8).collect();
                                let mut recv = vec![0xEEu8; 12];
                                g.all_to_all_others(&send, &mut recv).unwrap();
                                (buf, recv)
                            })
                        })
                        .collect();
                    handles.into_iter().map(|h| h.join().unwrap()).collect()
                });
                for (r, (buf, recv)) in results.iter().enumerate() {
                    assert_eq!(*buf, (0..len as u8).collect::<Vec<_>>(), "member {r}");
                    for j in (0..3).filter(|&j| j != r) {
                        assert_eq!(recv[j * 4..(j + 1) * 4], [(10 * j + r) as u8; 4]);
                    }
                }
            }
        }
        // Blocks that do not cover the buffer are refused.
        assert!(check_in_place(13, 4, 3).is_err());
        assert!(SingleProcess.all_gather_in_place(&mut [0u8; 5], 4).is_err());
        assert!(SingleProcess.all_gather_in_place(&mut [0u8; 5], 5).is_ok());
    }

    #[test]
    fn the_tree_over_process_subtrees_is_the_tree_over_all_shards() {
        // Values whose sums round differently in different orders.
        let len = 5;
        let big = [1e8f32, 1.0, 1.0, 1.0, -1e8, 1.0, 1.0, 1.0];
        let leaves: Vec<f32> = (0..8 * len)
            .map(|i| big[i / len] + (i % len) as f32 * 0.25)
            .collect();
        let mut whole = leaves.clone();
        pairwise_tree_sum(&mut whole, len);
        for procs in [1usize, 2, 4, 8] {
            let l = 8 / procs;
            let mut partial: Vec<f32> = Vec::new();
            for r in 0..procs {
                let mut mine = leaves[r * l * len..(r + 1) * l * len].to_vec();
                pairwise_tree_sum(&mut mine, len);
                partial.extend_from_slice(&mine[..len]);
            }
            pairwise_tree_sum(&mut partial, len);
            assert_eq!(partial[..len], whole[..len], "{procs} processes");
        }
        // A left-to-right sum is a different order, and here it gives different bits: the
        // test above could fail.
        let mut serial = vec![0f32; len];
        for s in 0..8 {
            for j in 0..len {
                serial[j] += leaves[s * len + j];
            }
        }
        assert_ne!(serial, whole[..len]);
    }

    #[test]
    fn shard_counts_that_would_change_the_sum_are_refused() {
        assert!(ShardPlan::new(8, 2, 1).is_ok());
        assert!(ShardPlan::new(6, 3, 0).is_ok());
        assert!(ShardPlan::new(8, 3, 0).is_err());
        assert!(ShardPlan::new(12, 2, 0).is_err()); // 6 a process: not a power of two
        assert!(ShardPlan::new(0, 1, 0).is_err());
        assert!(ShardPlan::new(3, 1, 0).is_ok());
        assert!(ShardPlan::new(4, 2, 2).is_err());
        let plan = ShardPlan::new(4, 1, 0).unwrap();
        assert_eq!(plan.rows(3, 10), 7..10);
        assert_eq!(ShardPlan::new(1, 1, 0).unwrap().stream_index(9, 0), 9);
    }
}
