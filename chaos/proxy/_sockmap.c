/* See _sockmap.h. Raw bpf(2) syscalls and a hand-assembled program: no libbpf or clang needed. */
#define _GNU_SOURCE
#include "_sockmap.h"

#include <errno.h>
#include <linux/bpf.h>
#include <linux/membarrier.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/sock_diag.h>
#include <linux/unix_diag.h>
#include <linux/sockios.h>
#include <linux/tcp.h>
#include <netinet/in.h>
#include <stddef.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#ifndef SO_COOKIE
#define SO_COOKIE 57
#endif
#ifndef SO_MEMINFO
#define SO_MEMINFO 55
#endif

typedef struct {
    uint32_t peer_slot, own_slot;
    uint64_t consumed; /* bytes of `passed` that userspace has read and forwarded; SM_CLOSED: never */
} Route;

typedef struct {
    uint64_t passed;     /* bytes the program handed to userspace */
    uint64_t redirected; /* bytes the program sent to the peer */
} Counts;

static long sys_bpf(int cmd, union bpf_attr *attr) { return syscall(__NR_bpf, cmd, attr, sizeof *attr); }

static int map_create(uint32_t type, uint32_t key_size, uint32_t value_size, uint32_t entries) {
    union bpf_attr a;
    memset(&a, 0, sizeof a);
    a.map_type = type;
    a.key_size = key_size;
    a.value_size = value_size;
    a.max_entries = entries;
    return (int)sys_bpf(BPF_MAP_CREATE, &a);
}

static int elem(int cmd, int map, const void *key, void *value, uint64_t flags) {
    union bpf_attr a;
    memset(&a, 0, sizeof a);
    a.map_fd = (uint32_t)map;
    a.key = (uint64_t)(uintptr_t)key;
    a.value = (uint64_t)(uintptr_t)value;
    a.flags = flags;
    return (int)sys_bpf(cmd, &a);
}

#define INSN(c, d, s, o, i) ((struct bpf_insn){.code = (c), .dst_reg = (d), .src_reg = (s), .off = (o), .imm = (i)})
#define MOV_REG(d, s) INSN(BPF_ALU64 | BPF_MOV | BPF_X, d, s, 0, 0)
#define MOV_IMM(d, i) INSN(BPF_ALU64 | BPF_MOV | BPF_K, d, 0, 0, i)
#define ADD_IMM(d, i) INSN(BPF_ALU64 | BPF_ADD | BPF_K, d, 0, 0, i)
#define CALL(f) INSN(BPF_JMP | BPF_CALL, 0, 0, 0, f)
#define EXIT() INSN(BPF_JMP | BPF_EXIT, 0, 0, 0, 0)
#define LD_MAP(d, fd) INSN(BPF_LD | BPF_IMM | BPF_DW, d, BPF_PSEUDO_MAP_FD, 0, fd), INSN(0, 0, 0, 0, 0)
#define LDX(size, d, s, off) INSN(BPF_LDX | BPF_MEM | size, d, s, off, 0)
#define STX(size, d, s, off) INSN(BPF_STX | BPF_MEM | size, d, s, off, 0)
#define XADD64(d, s, off) INSN(BPF_STX | BPF_ATOMIC | BPF_DW, d, s, off, BPF_ADD)
#define JEQ_IMM(d, i, off) INSN(BPF_JMP | BPF_JEQ | BPF_K, d, 0, off, i)
#define JNE_IMM(d, i, off) INSN(BPF_JMP | BPF_JNE | BPF_K, d, 0, off, i)
#define JNE_REG(d, s, off) INSN(BPF_JMP | BPF_JNE | BPF_X, d, s, off, 0)
#define JNE32_IMM(d, i, off) INSN(BPF_JMP32 | BPF_JNE | BPF_K, d, 0, off, i)
#define JA(off) INSN(BPF_JMP | BPF_JA, 0, 0, off, 0)

static int load_program(SockMap *m) {
    /* r6 = skb; key = socket cookie; r7 = route; r8 = counts (numbers: index after the len check) */
    struct bpf_insn prog[] = {
        /* 0 */ MOV_REG(6, 1),
        /* a FIN comes through as an empty chunk: redirected, the kernel would report EPIPE on the
         * peer (nothing sent); TCP has already taken the FIN, so the empty chunk is just dropped */
        LDX(BPF_W, 2, 6, offsetof(struct __sk_buff, len)),
        JNE_IMM(2, 0, 2),
        MOV_IMM(0, SK_DROP),
        EXIT(),
        /* 1 */ CALL(BPF_FUNC_get_socket_cookie),
        /* 2 */ STX(BPF_DW, 10, 0, -8),
        /* 3 */ LD_MAP(1, m->routes),
        /* 5 */ MOV_REG(2, 10),
        /* 6 */ ADD_IMM(2, -8),
        /* 7 */ CALL(BPF_FUNC_map_lookup_elem),
        /* 8 */ JEQ_IMM(0, 0, 25), /* not ours -> 34 pass */
        /* 9 */ MOV_REG(7, 0),
        /* 10 */ LD_MAP(1, m->counts),
        /* 12 */ MOV_REG(2, 10),
        /* 13 */ ADD_IMM(2, -8),
        /* 14 */ CALL(BPF_FUNC_map_lookup_elem),
        /* 15 */ JEQ_IMM(0, 0, 18), /* -> 34 pass */
        /* 16 */ MOV_REG(8, 0),
        /* 17 */ LDX(BPF_W, 1, 6, offsetof(struct __sk_buff, len)),
        /* 18 */ LDX(BPF_DW, 2, 8, offsetof(Counts, passed)),
        /* 19 */ LDX(BPF_DW, 3, 7, offsetof(Route, consumed)),
        /* 20 */ JNE_REG(2, 3, 12), /* gate closed -> 33 */
        /* 21 */ XADD64(8, 1, offsetof(Counts, redirected)),
        /* 22 */ LDX(BPF_W, 3, 7, offsetof(Route, peer_slot)),
        /* 23 */ MOV_REG(1, 6),
        /* 24 */ LD_MAP(2, m->sockmap),
        /* 26 */ LDX(BPF_W, 4, 7, offsetof(Route, own_slot)),
        /* 27 */ JNE32_IMM(4, (int32_t)SM_MARKER, 2), /* -> 30: egress of the peer socket */
        /* 28 */ MOV_IMM(4, BPF_F_INGRESS),          /* a marker: into the peer's own receive queue */
        /* 29 */ JA(1),
        /* 30 */ MOV_IMM(4, 0),
        /* 31 */ CALL(BPF_FUNC_sk_redirect_map),
        /* 32 */ EXIT(),
        /* 33 */ XADD64(8, 1, offsetof(Counts, passed)),
        /* 34 */ MOV_IMM(0, SK_PASS),
        /* 35 */ EXIT(),
    };
    union bpf_attr a;
    memset(&a, 0, sizeof a);
    a.prog_type = BPF_PROG_TYPE_SK_SKB;
    a.insns = (uint64_t)(uintptr_t)prog;
    a.insn_cnt = sizeof prog / sizeof prog[0];
    a.license = (uint64_t)(uintptr_t)"GPL";
    return (int)sys_bpf(BPF_PROG_LOAD, &a);
}

void sm_close(SockMap *m) {
    int *fds[] = {&m->prog, &m->sockmap, &m->routes, &m->counts};
    for (size_t i = 0; i < sizeof fds / sizeof fds[0]; i++) {
        if (*fds[i] >= 0) close(*fds[i]);
        *fds[i] = -1;
    }
}

int sm_open(SockMap *m, uint32_t nslots) {
    m->sockmap = m->routes = m->counts = m->prog = -1;
    m->nslots = nslots;
    m->sockmap = map_create(BPF_MAP_TYPE_SOCKMAP, 4, 8, nslots);
    m->routes = map_create(BPF_MAP_TYPE_HASH, 8, sizeof(Route), nslots);
    m->counts = map_create(BPF_MAP_TYPE_HASH, 8, sizeof(Counts), nslots);
    if (m->sockmap < 0 || m->routes < 0 || m->counts < 0) goto fail;
    m->prog = load_program(m);
    if (m->prog < 0) goto fail;
    static const int attach_types[] = {BPF_SK_SKB_VERDICT, BPF_SK_SKB_STREAM_VERDICT};
    for (size_t i = 0; i < 2; i++) {
        union bpf_attr a;
        memset(&a, 0, sizeof a);
        a.target_fd = (uint32_t)m->sockmap;
        a.attach_bpf_fd = (uint32_t)m->prog;
        a.attach_type = (uint32_t)attach_types[i];
        if (sys_bpf(BPF_PROG_ATTACH, &a) == 0) return 0;
    }
fail:;
    int err = errno;
    sm_close(m);
    errno = err;
    return -1;
}

int sm_cookie(int fd, uint64_t *cookie) {
    socklen_t len = sizeof *cookie;
    return getsockopt(fd, SOL_SOCKET, SO_COOKIE, cookie, &len);
}

/* One unix_diag query: the cookie of the socket with this inode, and its peer's inode (0: none).
 * A connecting socket's peer is found only once the server has accepted it. */
static int unix_diag(uint32_t ino, uint64_t *cookie, uint32_t *peer) {
    int nl = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
    if (nl < 0) return -1;
    struct {
        struct nlmsghdr h;
        struct unix_diag_req r;
    } req;
    memset(&req, 0, sizeof req);
    req.h.nlmsg_len = sizeof req;
    req.h.nlmsg_type = SOCK_DIAG_BY_FAMILY;
    req.h.nlmsg_flags = NLM_F_REQUEST;
    req.r.sdiag_family = AF_UNIX;
    req.r.udiag_ino = ino;
    req.r.udiag_show = UDIAG_SHOW_PEER;
    req.r.udiag_cookie[0] = req.r.udiag_cookie[1] = ~0U; /* INET_DIAG_NOCOOKIE: look up by inode */
    union {
        char bytes[1024];
        struct nlmsghdr h;
    } reply;
    int rc = -1;
    if (send(nl, &req, sizeof req, 0) == (ssize_t)sizeof req) {
        ssize_t n = recv(nl, reply.bytes, sizeof reply.bytes, 0);
        struct nlmsghdr *h = &reply.h;
        if (n > 0 && NLMSG_OK(h, (size_t)n) && h->nlmsg_type == SOCK_DIAG_BY_FAMILY) {
            struct unix_diag_msg *msg = NLMSG_DATA(h);
            *cookie = (uint64_t)msg->udiag_cookie[0] | ((uint64_t)msg->udiag_cookie[1] << 32);
            *peer = 0;
            int len = (int)h->nlmsg_len - (int)NLMSG_LENGTH(sizeof *msg);
            for (struct rtattr *a = (struct rtattr *)(msg + 1); RTA_OK(a, len); a = RTA_NEXT(a, len))
                if (a->rta_type == UNIX_DIAG_PEER) memcpy(peer, RTA_DATA(a), sizeof *peer);
            rc = 0;
        }
    }
    close(nl);
    return rc;
}

int sm_key(int fd, uint64_t *key) {
    int domain = 0;
    socklen_t len = sizeof domain;
    if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) < 0) return -1;
    if (domain != AF_UNIX) return sm_cookie(fd, key);
    /* a unix chunk belongs to its sender: the program sees the peer's cookie */
    struct stat st;
    uint64_t own;
    uint32_t peer, back;
    if (fstat(fd, &st) < 0 || unix_diag((uint32_t)st.st_ino, &own, &peer) < 0 || peer == 0) return -1;
    return unix_diag(peer, key, &back);
}

int sm_rmem(int fd) {
    uint32_t info[SK_MEMINFO_VARS];
    socklen_t len = sizeof info;
    if (getsockopt(fd, SOL_SOCKET, SO_MEMINFO, info, &len) < 0) return -1;
    return (int)info[SK_MEMINFO_RMEM_ALLOC];
}

int sm_inq(int fd) {
    int queued = 0;
    return ioctl(fd, SIOCINQ, &queued) < 0 ? -1 : queued;
}

int sm_route_set(SockMap *m, uint64_t cookie, uint32_t peer_slot, uint32_t own_slot, uint64_t consumed) {
    Route r = {.peer_slot = peer_slot, .own_slot = own_slot, .consumed = consumed};
    return elem(BPF_MAP_UPDATE_ELEM, m->routes, &cookie, &r, BPF_ANY);
}

int sm_route_get(SockMap *m, uint64_t cookie, uint32_t *peer_slot, uint32_t *own_slot, uint64_t *consumed) {
    Route r;
    if (elem(BPF_MAP_LOOKUP_ELEM, m->routes, &cookie, &r, 0) < 0) return -1;
    if (peer_slot) *peer_slot = r.peer_slot;
    if (own_slot) *own_slot = r.own_slot;
    if (consumed) *consumed = r.consumed;
    return 0;
}

int sm_counts(SockMap *m, uint64_t cookie, uint64_t *passed, uint64_t *redirected) {
    Counts c;
    if (elem(BPF_MAP_LOOKUP_ELEM, m->counts, &cookie, &c, 0) < 0) return -1;
    if (passed) *passed = c.passed;
    if (redirected) *redirected = c.redirected;
    return 0;
}

void sm_forget(SockMap *m, uint64_t cookie) {
    elem(BPF_MAP_DELETE_ELEM, m->routes, &cookie, NULL, 0);
    elem(BPF_MAP_DELETE_ELEM, m->counts, &cookie, NULL, 0);
}

int sm_insert(SockMap *m, uint32_t slot, int fd, uint64_t key) {
    Counts zero = {0, 0};
    if (elem(BPF_MAP_UPDATE_ELEM, m->counts, &key, &zero, BPF_ANY) < 0) return -1;
    uint64_t value = (uint64_t)fd;
    return elem(BPF_MAP_UPDATE_ELEM, m->sockmap, &slot, &value, BPF_ANY);
}

void sm_remove(SockMap *m, uint32_t slot) { elem(BPF_MAP_DELETE_ELEM, m->sockmap, &slot, NULL, 0); }

int sm_slot_used(SockMap *m, uint32_t slot) {
    uint64_t cookie;
    if (elem(BPF_MAP_LOOKUP_ELEM, m->sockmap, &slot, &cookie, 0) == 0) return 1;
    return errno == ENOENT ? 0 : -1;
}

int sm_poke(int fd) {
    /* Setting SO_RCVLOWAT calls the socket's data_ready, which now runs the verdict over
     * whatever arrived before the socket entered the map (otherwise it would wait for more). */
    int one = 1;
    return setsockopt(fd, SOL_SOCKET, SO_RCVLOWAT, &one, sizeof one);
}

int sm_written(int fd, uint64_t *bytes) {
    /* acked + still queued. Read acked first: an ACK landing in between makes the sum smaller than
     * the truth, never larger, so a caller waiting for a target never stops early. */
    struct tcp_info info;
    socklen_t len = sizeof info;
    memset(&info, 0, sizeof info);
    if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &len) < 0) return -1;
    int queued = 0;
    if (ioctl(fd, SIOCOUTQ, &queued) < 0) return -1;
    *bytes = info.tcpi_bytes_acked + (uint64_t)queued;
    return 0;
}

void sm_settle(int fd) {
    /* A FIN can ride on the same segment as the last bytes, and its wakeup comes before the
     * verdict has run on them. Softirq handles a segment (data_ready and verdict included) under
     * the socket's spinlock, which TCP_INFO takes too: once it returns, that segment is done. */
    struct tcp_info info;
    socklen_t len = sizeof info;
    (void)getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &len);
}

void sm_barrier(void) {
    /* MEMBARRIER_CMD_GLOBAL waits for an RCU grace period, and verdict programs run under RCU. */
    if (syscall(__NR_membarrier, MEMBARRIER_CMD_GLOBAL, 0, 0) < 0) {
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}
