// rtdefer/detail/uring_setup.hpp: creating and probing the io_uring of a uring_loop, and the SQE
// fills liburing 2.3 has no helpers for (IORING_OP_FUTEX_WAIT arrived in Linux 6.7, liburing 2.6).
//
// Setup tries, once per process, the strongest flag set first and remembers the first the kernel
// accepts: SINGLE_ISSUER|DEFER_TASKRUN (completions run only when the owner enters the kernel),
// then COOP_TASKRUN (no IPI to deliver completions), both with TASKRUN_FLAG (the kernel says in the
// SQ flags when an enter is needed, so a turn with nothing to submit makes no syscall), then none.
// The ring must also have EXT_ARG (a wait with a timeout in one io_uring_enter) and the opcodes
// the loop uses (FUTEX_WAIT, ASYNC_CANCEL, LINK_TIMEOUT), checked with IORING_REGISTER_PROBE.
#pragma once

#include <rtdefer/config.hpp>
#include <rtdefer/status.hpp>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstring>

#include <linux/futex.h>
#include <liburing.h>

namespace rtdefer::detail {

// Append-only uapi values (include/uapi/linux/io_uring.h: ... SEND_ZC 47, SENDMSG_ZC 48,
// READ_MULTISHOT 49, WAITID 50, FUTEX_WAIT 51). Our own names: liburing >= 2.6 declares the
// kernel's as enumerators, which an #ifdef cannot see.
inline constexpr std::uint8_t uring_op_futex_wait = 51;
static_assert(IORING_OP_SENDMSG_ZC == 48, "io_uring opcode numbering differs from the kernel uapi");
// futex2 flags (include/uapi/linux/futex.h, Linux 6.7): 32-bit word, process-private.
inline constexpr std::uint32_t futex2_size_u32 = 0x02;
inline constexpr std::uint32_t futex2_private = 128;
#ifdef FUTEX2_SIZE_U32
static_assert(FUTEX2_SIZE_U32 == futex2_size_u32 && FUTEX2_PRIVATE == futex2_private);
#endif

/// Effects: fills `sqe` as an IORING_OP_FUTEX_WAIT on `word` expecting `expected` (io_uring/futex.c:
/// addr = word, addr2 = value, addr3 = bitset mask, fd = futex2 flags; len, futex_flags, buf_index
/// and file_index must be 0, hence the memset). Progress: wait-free. Real-time safety: yes.
inline void uring_prep_futex_wait(io_uring_sqe& sqe, std::uint32_t* word, std::uint32_t expected,
                                  std::uint64_t user_data) noexcept RTDEFER_NONBLOCKING {
    std::memset(&sqe, 0, sizeof sqe);
    sqe.opcode = uring_op_futex_wait;
    sqe.fd = static_cast<std::int32_t>(futex2_size_u32 | futex2_private);
    sqe.addr = reinterpret_cast<std::uintptr_t>(word);
    sqe.addr2 = expected;
    sqe.addr3 = FUTEX_BITSET_MATCH_ANY;
    sqe.user_data = user_data;
}

/// Returns: the status that says why io_uring cannot be used, for a setup errno (positive).
/// EPERM/EACCES: refused by policy (seccomp, kernel.io_uring_disabled); ENOSYS/EINVAL: missing.
constexpr status uring_setup_status(int err) noexcept {
    switch (err) {
    case 0: return status::ok;
    case EPERM:
    case EACCES: return status::not_permitted;
    case ENOSYS:
    case EINVAL:
    case EOPNOTSUPP: return status::not_supported;
    default: return status::system_error;
    }
}

inline constexpr unsigned uring_flags_defer =
    IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_TASKRUN_FLAG;
inline constexpr unsigned uring_flags_coop = IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG;

/// The flag set the kernel accepted last; ~0u until the first setup. relaxed (both sides): a hint
/// that saves refused attempts; every setup still checks its own result.
inline std::atomic<unsigned> uring_probed_flags{~0u};

/// Returns: whether the ring supports every opcode the loop submits (IORING_REGISTER_PROBE).
inline bool uring_probe_ops(io_uring& ring) noexcept {
    // The probe result is a header and one entry per opcode: a stack buffer, no allocation.
    alignas(io_uring_probe) unsigned char buf[sizeof(io_uring_probe) + 256 * sizeof(io_uring_probe_op)] = {};
    auto* p = reinterpret_cast<io_uring_probe*>(buf);
    if (io_uring_register_probe(&ring, p, 256) < 0)
        return false;
    const auto has = [p](unsigned op) {
        return op <= p->last_op && op < p->ops_len && (p->ops[op].flags & IO_URING_OP_SUPPORTED) != 0;
    };
    return has(uring_op_futex_wait) && has(IORING_OP_ASYNC_CANCEL) && has(IORING_OP_LINK_TIMEOUT);
}

/// Effects: creates `ring` with `entries` SQEs and the strongest accepted flag set, then probes it.
/// On any failure no ring is left open. Returns: 0, or the positive errno that refuses io_uring
/// (EINVAL also for a ring without EXT_ARG or a needed opcode).
/// Progress: blocking (syscalls, mmap). Real-time safety: setup path only.
inline int uring_setup(io_uring& ring, unsigned entries) noexcept {
    const unsigned cached = uring_probed_flags.load(std::memory_order_relaxed);
    const unsigned candidates[] = {uring_flags_defer, uring_flags_coop, 0u};
    int err = EINVAL;
    for (const unsigned flags : candidates) {
        if (cached != ~0u && flags != cached)
            continue; // an earlier setup found the first flag set this kernel accepts
        io_uring_params params{};
        params.flags = flags;
        const int rc = io_uring_queue_init_params(entries, &ring, &params);
        if (rc == -EINVAL)
            continue; // flags unknown to this kernel: try the next, weaker set
        if (rc < 0)
            return -rc; // EPERM, ENOSYS, ENOMEM...: a weaker flag set would not help
        if ((params.features & IORING_FEAT_EXT_ARG) == 0 || !uring_probe_ops(ring)) {
            io_uring_queue_exit(&ring);
            return EINVAL;
        }
        uring_probed_flags.store(flags, std::memory_order_relaxed);
        return 0;
    }
    return err;
}

} // namespace rtdefer::detail
