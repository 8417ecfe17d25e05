/* chaos.proxy._fastpath: a native forwarder for proxied connections that have no toxic.
 *
 * One Engine = one epoll loop in its own pthread (never touches Python, so the GIL is not held
 * while forwarding). A pair is a client fd and an upstream fd; bytes read from one side are sent
 * straight to the other from a scratch buffer. Only what the sink would not take is kept (per
 * direction), and while it waits the source is not read (backpressure) and the sink waits for
 * EPOLLOUT. EOF on one side becomes shutdown(SHUT_WR) on the other once its bytes are written;
 * when both directions are shut (or a socket fails) the pair's fds are closed and its id is queued
 * for Python, which learns about it from an eventfd (completion_fd) and calls completed().
 *
 * Kernel mode (see _sockmap.h): when BPF sockmap is available (root, Linux >= 5.13), a pair of a
 * TCP client and a TCP or unix upstream is also put in a sockmap and each direction whose gate
 * opens is forwarded by the kernel itself -- this thread then only waits for the FIN (EPOLLRDHUP,
 * which per-chunk wakeups do not trigger), makes sure everything redirected was handed to the other
 * socket (TCP: acked + queued bytes; unix: a marker, see marker_send), and passes the FIN on.
 * Bytes that arrive while a gate is closed are read here, as in userspace mode.
 *
 * All pair state is under one mutex: the engine thread holds it while it handles a batch of
 * events, API calls hold it for a few microseconds. Events carry the pair id (not a pointer), so
 * an event for a pair that was detached or closed meanwhile finds nothing and is ignored.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <time.h>
#include <unistd.h>

#include "_sockmap.h"

#define NBUCKETS 1024
#define SCRATCH (64 * 1024)
#define MAX_EVENTS 64
#define KERNEL_SLOTS 16384
#define MARKER_SETTLE_NS (50ull * 1000)
#define WAIT_STEP_NS (50 * 1000) /* how often a hand-over checks whether redirected bytes have left */
#define DRAIN_GIVE_UP_NS (2ull * 1000 * 1000 * 1000) /* a peer that stopped reading: pass the FIN on anyway */

enum { SLOT_FREE = 0, SLOT_PAIR, SLOT_RETIRED }; /* RETIRED: its socket went back to Python, still in the map */

typedef struct {
    char *buf; /* read from the source, not yet taken by the sink (NULL: nothing waits) */
    size_t len, off;
    unsigned long long bytes; /* read from the source */
    int eof;                  /* the source sent FIN */
    int shut;                 /* FIN passed on to the sink */
} Dir;

typedef struct Pair {
    uint64_t id;
    int fd[2];        /* 0 = client, 1 = upstream */
    uint32_t mask[2]; /* events registered for fd[i]; 0 = not in epoll */
    Dir dir[2];       /* dir[i] carries fd[i] -> fd[1 - i]: 0 = upstream stream, 1 = downstream */
    int done;         /* forwarding over, fds closed; kept for stats until close() */
    /* kernel mode */
    int kernel;        /* routes were set for both sockets */
    int inmap[2];      /* fd[i] is in the sockmap at slot[i] */
    uint32_t slot[2];
    uint64_t key[2];   /* what the program looks fd[i]'s chunks up by (sm_key) */
    int unix_[2];      /* fd[i] is a unix socket */
    uint64_t base[2];  /* TCP: bytes handed to fd[i] before it entered the map */
    /* ordering markers (toward a unix socket, which has no bytes_acked): dir i's marker is a
     * byte redirected into fd[1 - i]'s own receive queue behind what dir i redirected before */
    int mk_fd[2][2];
    uint32_t mk_slot[2];
    uint64_t mk_key[2];
    int mk_on[2];      /* a marker is on its way */
    int mk_done[2];    /* dir i's gate is closed or its FIN came, and the marker proved it drained */
    int kdir[2];       /* direction i is forwarded by the kernel (its gate is open) */
    int noopen[2];     /* userspace read bytes the program never passed: keep the gate shut */
    int paused;        /* gates closed for good (the pair is leaving the engine) */
    int folded;        /* the program's counts are already in dir[].bytes */
    int drain[2];      /* direction i saw its FIN; waiting for redirected bytes to leave */
    uint64_t drain_since[2];
    struct Pair *next;
} Pair;

typedef struct {
    PyObject_HEAD
    int epfd, wakefd, donefd;
    int started, stop;
    pthread_t thread;
    pthread_mutex_t lock;
    Pair *buckets[NBUCKETS];
    uint64_t next_id;
    size_t live;
    uint64_t *done;
    size_t ndone, capdone;
    int kernel;          /* sockmap loaded */
    SockMap sm;
    uint8_t *slot_state; /* KERNEL_SLOTS entries */
    uint64_t *slot_cookie; /* the key of each slot's socket */
    uint32_t cursor;
    int draining;        /* pairs with a drain[] set */
    char scratch[SCRATCH];
} Engine;

/* -- pairs (call with the lock held) ------------------------------------------------------- */

static Pair *find(Engine *e, uint64_t id) {
    Pair *p = e->buckets[id % NBUCKETS];
    while (p && p->id != id) p = p->next;
    return p;
}

static void unlink_free(Engine *e, Pair *p) {
    Pair **at = &e->buckets[p->id % NBUCKETS];
    while (*at != p) at = &(*at)->next;
    *at = p->next;
    free(p->dir[0].buf);
    free(p->dir[1].buf);
    free(p);
}

static void unregister(Engine *e, Pair *p) {
    for (int s = 0; s < 2; s++) {
        if (p->mask[s]) epoll_ctl(e->epfd, EPOLL_CTL_DEL, p->fd[s], NULL);
        p->mask[s] = 0;
    }
}

/* Register fd[s] for what it can do now: read while nothing of its direction waits and no EOF
 * yet; write while the other direction has bytes waiting. Nothing wanted = out of epoll (so a
 * hung-up socket cannot spin the loop). Returns -1 if epoll refused. */
static int rearm(Engine *e, Pair *p, int s) {
    uint32_t want = 0;
    if (p->kdir[s] && !p->dir[s].eof) want |= EPOLLRDHUP; /* the kernel moves its bytes; wake only for the FIN */
    else if (!p->dir[s].eof && p->dir[s].len == 0) want |= EPOLLIN;
    if (p->dir[1 - s].len) want |= EPOLLOUT;
    if (want == p->mask[s]) return 0;
    struct epoll_event ev = {.events = want, .data.u64 = (p->id << 1) | (uint64_t)s};
    int op = want == 0 ? EPOLL_CTL_DEL : p->mask[s] == 0 ? EPOLL_CTL_ADD : EPOLL_CTL_MOD;
    int rc = epoll_ctl(e->epfd, op, p->fd[s], &ev);
    p->mask[s] = want;
    return rc;
}

static void kernel_release(Engine *e, Pair *p);

static void finish(Engine *e, Pair *p) {
    unregister(e, p);
    kernel_release(e, p);
    close(p->fd[0]);
    close(p->fd[1]);
    p->done = 1;
    e->live--;
    if (e->ndone == e->capdone) {
        size_t cap = e->capdone ? e->capdone * 2 : 64;
        uint64_t *grown = realloc(e->done, cap * sizeof(uint64_t));
        if (!grown) return; /* Python still sees it as done through stats() */
        e->done = grown;
        e->capdone = cap;
    }
    e->done[e->ndone++] = p->id;
    uint64_t one = 1;
    ssize_t rc = write(e->donefd, &one, sizeof one);
    (void)rc;
}


/* -- kernel mode (lock held) ---------------------------------------------------------------- */

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int alloc_slot(Engine *e) {
    for (uint32_t i = 0; i < KERNEL_SLOTS; i++) {
        uint32_t at = (e->cursor + i) % KERNEL_SLOTS;
        if (e->slot_state[at] == SLOT_RETIRED && sm_slot_used(&e->sm, at) == 0) {
            sm_forget(&e->sm, e->slot_cookie[at]); /* its socket has closed since */
            e->slot_state[at] = SLOT_FREE;
        }
        if (e->slot_state[at] == SLOT_FREE) {
            e->slot_state[at] = SLOT_PAIR;
            e->cursor = at + 1;
            return (int)at;
        }
    }
    return -1;
}

enum { KIND_OTHER = 0, KIND_TCP, KIND_UNIX };

static int sock_kind(int fd) {
    int domain = 0, type = 0, proto = 0;
    socklen_t len = sizeof domain;
    if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) < 0) return KIND_OTHER;
    len = sizeof type;
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0 || type != SOCK_STREAM) return KIND_OTHER;
    if (domain == AF_UNIX) return KIND_UNIX;
    len = sizeof proto;
    if ((domain == AF_INET || domain == AF_INET6) && getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &proto, &len) == 0 &&
        proto == IPPROTO_TCP)
        return KIND_TCP;
    return KIND_OTHER;
}

/* Bytes the program sent from fd[d] to the peer (0 once folded into dir[d].bytes). */
static uint64_t redirected(Engine *e, Pair *p, int d) {
    uint64_t r = 0;
    if (p->kernel && !p->folded) sm_counts(&e->sm, p->key[d], NULL, &r);
    return r;
}

/* Open direction d's gate if userspace has forwarded everything the program passed it. */
static void try_open(Engine *e, Pair *p, int d) {
    Dir *x = &p->dir[d];
    if (!p->kernel || p->paused || p->kdir[d] || p->noopen[d] || !p->inmap[0] || !p->inmap[1] || x->len || x->eof)
        return;
    /* toward a unix socket only while the way back is in the kernel too: then nothing but our
     * marker ever lands in that socket's receive queue, so the marker can be read back safely */
    if (p->unix_[1 - d] && !p->kdir[1 - d]) return;
    uint64_t consumed = x->bytes;
    if (sm_route_set(&e->sm, p->key[d], p->slot[1 - d], p->slot[d], consumed) < 0) return;
    uint64_t passed;
    if (sm_counts(&e->sm, p->key[d], &passed, NULL) < 0) return;
    if (passed == consumed)
        p->kdir[d] = 1; /* only a pass moves `passed`, and none happens while equal: open for good */
    else if (passed < consumed)
        p->noopen[d] = 1;
}

static void try_open_both(Engine *e, Pair *p) {
    try_open(e, p, 1); /* the way back first (see try_open), then forward, then back again */
    try_open(e, p, 0);
    try_open(e, p, 1);
}

/* Put a fresh pair in the sockmap, gates closed; then open what can be opened. */
static void kernel_attach(Engine *e, Pair *p) {
    if (!e->kernel) return;
    for (int s = 0; s < 2; s++) {
        int kind = sock_kind(p->fd[s]);
        if (kind == KIND_OTHER) return;
        p->unix_[s] = kind == KIND_UNIX;
    }
    if (p->unix_[0] && p->unix_[1]) return; /* nothing would tell when a FIN may follow */
    for (int s = 0; s < 2; s++) {
        /* a unix peer that is not accepted yet has no cookie: that pair stays in userspace mode */
        if (sm_key(p->fd[s], &p->key[s]) < 0) return;
        /* a socket that was in the map before (it came back from Python) stays in userspace mode */
        if (sm_route_get(&e->sm, p->key[s], NULL, NULL, NULL) == 0) return;
        p->base[s] = 0;
        if (!p->unix_[s] && sm_written(p->fd[s], &p->base[s]) < 0) return;
    }
    int a = alloc_slot(e);
    if (a < 0) return;
    int b = alloc_slot(e);
    if (b < 0) {
        e->slot_state[a] = SLOT_FREE;
        return;
    }
    p->slot[0] = (uint32_t)a;
    p->slot[1] = (uint32_t)b;
    for (int s = 0; s < 2; s++) {
        if (sm_route_set(&e->sm, p->key[s], p->slot[1 - s], p->slot[s], SM_CLOSED) < 0) {
            sm_forget(&e->sm, p->key[0]);
            e->slot_state[a] = e->slot_state[b] = SLOT_FREE;
            return;
        }
    }
    p->kernel = 1;
    /* upstream first: a server that speaks first must not have its bytes redirected to an empty slot
     * (gates are closed anyway; a socket that fails to enter just stays in userspace mode) */
    for (int s = 1; s >= 0; s--) {
        if (sm_insert(&e->sm, p->slot[s], p->fd[s], p->key[s]) == 0) {
            p->inmap[s] = 1;
            e->slot_cookie[p->slot[s]] = p->key[s];
            sm_poke(p->fd[s]);
            /* a unix socket runs the program once per chunk sent to it, so a chunk that was
             * already queued would lag one behind for good: such a direction stays in userspace */
            if (p->unix_[s] && sm_inq(p->fd[s]) != 0) p->noopen[s] = 1;
        } else {
            e->slot_state[p->slot[s]] = SLOT_FREE;
        }
    }
    try_open_both(e, p);
}

static void marker_clear(Engine *e, Pair *p, int d) {
    if (!p->mk_on[d]) return;
    sm_remove(&e->sm, p->mk_slot[d]);
    e->slot_state[p->mk_slot[d]] = SLOT_FREE;
    sm_forget(&e->sm, p->mk_key[d]);
    close(p->mk_fd[d][0]);
    close(p->mk_fd[d][1]);
    p->mk_on[d] = 0;
}

/* Send dir d's marker: a byte into a fresh socketpair whose receiving end sits in the map with a
 * route that redirects into fd[1 - d]'s receive queue. The kernel queues it behind every chunk
 * already redirected to fd[1 - d] and handles that queue in order. */
static void marker_send(Engine *e, Pair *p, int d) {
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv) < 0) return;
    uint64_t key;
    int slot = sm_cookie(sv[0], &key) < 0 ? -1 : alloc_slot(e); /* a unix chunk carries its sender's cookie */
    if (slot < 0) goto fail;
    if (sm_route_set(&e->sm, key, p->slot[1 - d], SM_MARKER, 0) < 0 || sm_insert(&e->sm, (uint32_t)slot, sv[1], key) < 0) {
        sm_forget(&e->sm, key);
        e->slot_state[slot] = SLOT_FREE;
        goto fail;
    }
    p->mk_fd[d][0] = sv[0];
    p->mk_fd[d][1] = sv[1];
    p->mk_slot[d] = (uint32_t)slot;
    p->mk_key[d] = key;
    p->mk_on[d] = 1;
    if (send(sv[0], "m", 1, MSG_NOSIGNAL) != 1) marker_clear(e, p, d);
    return;
fail:
    close(sv[0]);
    close(sv[1]);
}

/* Dir d goes toward a unix socket: drained once its marker came back out of that socket. Only
 * valid while nothing else can enter that socket's receive queue (the way back is in the kernel,
 * or at its end and read to the end); otherwise 0 until the caller gives up. */
static int marker_drained(Engine *e, Pair *p, int d) {
    if (p->mk_done[d]) return 1;
    if (!p->kernel || redirected(e, p, d) == 0) return 1;
    int back = 1 - d, sink = p->fd[1 - d];
    if (!p->mk_on[d]) {
        int back_quiet = (p->kdir[back] && !p->paused) || (p->dir[back].eof && !p->dir[back].len && !p->kdir[back]);
        if (back_quiet) marker_send(e, p, d);
        return 0;
    }
    /* the redirect charges the marker to the socket just before queueing it: look twice */
    if (sm_rmem(sink) <= 0) return 0;
    struct timespec nap = {0, MARKER_SETTLE_NS};
    nanosleep(&nap, NULL);
    char m;
    if (recv(sink, &m, 1, MSG_DONTWAIT) != 1) return 0;
    marker_clear(e, p, d);
    p->mk_done[d] = 1;
    return 1;
}

/* Everything the program redirected from fd[d] (and userspace sent) was handed to fd[1 - d]. */
static int drained(Engine *e, Pair *p, int d) {
    if (p->unix_[1 - d]) return marker_drained(e, p, d);
    uint64_t written, unsent = p->dir[d].len - p->dir[d].off; /* read by userspace, not yet sent */
    if (sm_written(p->fd[1 - d], &written) < 0) return 1;
    return written + unsent >= p->base[1 - d] + p->dir[d].bytes + redirected(e, p, d);
}

static void stop_drain(Engine *e, Pair *p, int d) {
    if (p->drain[d]) {
        p->drain[d] = 0;
        e->draining--;
    }
}

static void pass_fin(Engine *e, Pair *p, int d) {
    stop_drain(e, p, d);
    if (!p->dir[d].shut) {
        shutdown(p->fd[1 - d], SHUT_WR);
        p->dir[d].shut = 1;
    }
}

static void start_drain(Engine *e, Pair *p, int d) {
    sm_settle(p->fd[d]);
    if (drained(e, p, d)) {
        pass_fin(e, p, d);
    } else if (!p->drain[d]) {
        p->drain[d] = 1;
        p->drain_since[d] = now_ns();
        e->draining++;
    }
}

/* Close the gates for good: later bytes stay with the socket for whoever reads it next. */
static void pause_gates(Engine *e, Pair *p) {
    if (!p->kernel || p->paused) return;
    for (int d = 0; d < 2; d++) sm_route_set(&e->sm, p->key[d], p->slot[1 - d], p->slot[d], SM_CLOSED);
    p->paused = 1;
}

/* First step of pausing a pair with a unix socket: close the gate toward it only, so the way
 * back still runs in the kernel while that direction's marker proves it drained. 1 if closed. */
static int pause_toward_unix(Engine *e, Pair *p) {
    if (!p->kernel || p->paused) return 0;
    int closed = 0;
    for (int d = 0; d < 2; d++) {
        if (p->unix_[1 - d] && !p->mk_done[d]) {
            sm_route_set(&e->sm, p->key[d], p->slot[1 - d], p->slot[d], SM_CLOSED);
            closed = 1;
        }
    }
    return closed;
}

/* Wait (lock held, GIL released by the caller) until direction d is drained, or give up
 * DRAIN_GIVE_UP_NS after `since` (a peer that stopped reading). */
static void wait_drained(Engine *e, Pair *p, int d, uint64_t since) {
    struct timespec nap = {0, WAIT_STEP_NS};
    while (!drained(e, p, d) && now_ns() - since < DRAIN_GIVE_UP_NS) nanosleep(&nap, NULL);
}

/* After pause_toward_unix and a barrier: wait until the directions toward a unix socket are
 * drained (lock held, GIL released by the caller). */
static void wait_toward_unix(Engine *e, Pair *p) {
    uint64_t since = now_ns();
    for (int d = 0; d < 2; d++) {
        if (!p->unix_[1 - d]) continue;
        wait_drained(e, p, d, since);
        marker_clear(e, p, d);
        p->mk_done[d] = 1; /* proved, or given up on */
    }
}

static void fold_counts(Engine *e, Pair *p) {
    if (!p->kernel || p->folded) return;
    for (int d = 0; d < 2; d++) p->dir[d].bytes += redirected(e, p, d);
    p->folded = 1;
}

/* The pair is over: forget its routes and slots (closing the fds takes them out of the map). */
static void kernel_release(Engine *e, Pair *p) {
    if (!p->kernel) return;
    fold_counts(e, p);
    for (int d = 0; d < 2; d++) {
        stop_drain(e, p, d);
        marker_clear(e, p, d);
        if (p->inmap[d]) {
            sm_remove(&e->sm, p->slot[d]);
            e->slot_state[p->slot[d]] = SLOT_FREE;
            p->inmap[d] = 0;
        }
        sm_forget(&e->sm, p->key[d]);
    }
    p->kernel = 0;
}

/* -- forwarding (engine thread, lock held) -------------------------------------------------- */

/* >= 0: bytes taken (0 when the sink is full); -1: the sink failed */
static ssize_t send_some(int fd, const char *buf, size_t n) {
    for (;;) {
        ssize_t w = send(fd, buf, n, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w >= 0) return w;
        if (errno == EINTR) continue;
        return (errno == EAGAIN || errno == EWOULDBLOCK) ? 0 : -1;
    }
}

/* Move what can move in direction d without blocking. Returns 1 if a socket failed. */
static int pump(Engine *e, Pair *p, int d) {
    Dir *x = &p->dir[d];
    int src = p->fd[d], dst = p->fd[1 - d];
    if (x->len) {
        ssize_t w = send_some(dst, x->buf + x->off, x->len - x->off);
        if (w < 0) return 1;
        x->off += (size_t)w;
        if (x->off < x->len) return 0;
        free(x->buf);
        x->buf = NULL;
        x->len = x->off = 0;
    }
    if (!x->eof) {
        ssize_t n;
        do n = recv(src, e->scratch, SCRATCH, MSG_DONTWAIT);
        while (n < 0 && errno == EINTR);
        if (n < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK) return 1;
        } else if (n == 0) {
            x->eof = 1;
        } else {
            x->bytes += (unsigned long long)n;
            ssize_t w = send_some(dst, e->scratch, (size_t)n);
            if (w < 0) return 1;
            if (w < n) { /* keep the rest; the source waits until the sink drains it */
                x->buf = malloc((size_t)(n - w));
                if (!x->buf) return 1;
                memcpy(x->buf, e->scratch + w, (size_t)(n - w));
                x->len = (size_t)(n - w);
                x->off = 0;
            }
        }
    }
    if (x->eof && !x->len && !x->shut) {
        shutdown(dst, SHUT_WR);
        x->shut = 1;
    }
    return 0;
}

static void handle(Engine *e, Pair *p, int s, uint32_t ev) {
    int failed = 0;
    if ((p->mask[s] & EPOLLRDHUP) && (ev & (EPOLLRDHUP | EPOLLHUP))) { /* FIN on a kernel direction */
        p->dir[s].eof = 1;
        start_drain(e, p, s);
    }
    if ((p->mask[s] & EPOLLIN) && (ev & (EPOLLIN | EPOLLHUP | EPOLLERR))) failed |= pump(e, p, s);
    if (!failed && (p->mask[s] & EPOLLOUT) && (ev & (EPOLLOUT | EPOLLHUP | EPOLLERR))) failed |= pump(e, p, 1 - s);
    if (failed || (ev & EPOLLERR) || (p->dir[0].shut && p->dir[1].shut)) {
        finish(e, p);
        return;
    }
    if (p->kernel && !(p->kdir[0] && p->kdir[1])) try_open_both(e, p);
    if (rearm(e, p, 0) < 0 || rearm(e, p, 1) < 0) finish(e, p);
}

/* FINs waiting for the kernel to hand over what it redirected before them. */
static void check_drains(Engine *e) {
    uint64_t now = now_ns();
    for (int b = 0; b < NBUCKETS && e->draining; b++) {
        for (Pair *p = e->buckets[b]; p; p = p->next) {
            if (p->done || !(p->drain[0] || p->drain[1])) continue;
            for (int d = 0; d < 2; d++)
                if (p->drain[d] && (drained(e, p, d) || now - p->drain_since[d] > DRAIN_GIVE_UP_NS)) pass_fin(e, p, d);
            if (p->dir[0].shut && p->dir[1].shut) finish(e, p);
            else if (rearm(e, p, 0) < 0 || rearm(e, p, 1) < 0) finish(e, p);
        }
    }
}

static void *run(void *arg) {
    Engine *e = arg;
    struct epoll_event evs[MAX_EVENTS];
    for (;;) {
        int n = epoll_wait(e->epfd, evs, MAX_EVENTS, e->draining ? 1 : -1);
        if (n < 0 && errno != EINTR) break;
        pthread_mutex_lock(&e->lock);
        if (e->stop) {
            pthread_mutex_unlock(&e->lock);
            break;
        }
        if (e->draining) check_drains(e);
        for (int i = 0; i < n; i++) {
            uint64_t key = evs[i].data.u64;
            if (key == 0) continue; /* the wake fd */
            Pair *p = find(e, key >> 1);
            if (p && !p->done) handle(e, p, (int)(key & 1), evs[i].events);
        }
        pthread_mutex_unlock(&e->lock);
    }
    return NULL;
}

/* -- Python API ------------------------------------------------------------------------------- */

static void engine_stop(Engine *e) {
    if (e->started) {
        pthread_mutex_lock(&e->lock);
        e->stop = 1;
        pthread_mutex_unlock(&e->lock);
        uint64_t one = 1;
        ssize_t rc = write(e->wakefd, &one, sizeof one);
        (void)rc;
        Py_BEGIN_ALLOW_THREADS
        pthread_join(e->thread, NULL);
        Py_END_ALLOW_THREADS
        e->started = 0;
    }
    for (int b = 0; b < NBUCKETS; b++) {
        while (e->buckets[b]) {
            Pair *p = e->buckets[b];
            if (!p->done) finish(e, p);
            unlink_free(e, p);
        }
    }
}

static void Engine_dealloc(Engine *e) {
    engine_stop(e);
    if (e->epfd >= 0) close(e->epfd);
    if (e->wakefd >= 0) close(e->wakefd);
    if (e->donefd >= 0) close(e->donefd);
    if (e->kernel) sm_close(&e->sm);
    free(e->slot_state);
    free(e->slot_cookie);
    pthread_mutex_destroy(&e->lock);
    free(e->done);
    Py_TYPE(e)->tp_free((PyObject *)e);
}

static PyObject *Engine_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"kernel", NULL};
    int want_kernel = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|p:Engine", kwlist, &want_kernel)) return NULL;
    Engine *e = (Engine *)type->tp_alloc(type, 0); /* zeroed */
    if (!e) return NULL;
    pthread_mutex_init(&e->lock, NULL);
    e->epfd = e->wakefd = e->donefd = -1;
    if (want_kernel) {
        e->slot_state = calloc(KERNEL_SLOTS, 1);
        e->slot_cookie = calloc(KERNEL_SLOTS, sizeof(uint64_t));
        /* no BPF here (not root, no sockmap): userspace mode only, silently */
        e->kernel = e->slot_state && e->slot_cookie && sm_open(&e->sm, KERNEL_SLOTS) == 0;
    }
    e->next_id = 1;
    e->epfd = epoll_create1(EPOLL_CLOEXEC);
    e->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    e->donefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = 0};
    if (e->epfd < 0 || e->wakefd < 0 || e->donefd < 0 || epoll_ctl(e->epfd, EPOLL_CTL_ADD, e->wakefd, &ev) < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        Py_DECREF(e);
        return NULL;
    }
    /* signals belong to Python's main thread: keep them away from the engine thread */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(&e->thread, NULL, run, e);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        errno = rc;
        PyErr_SetFromErrno(PyExc_OSError);
        Py_DECREF(e);
        return NULL;
    }
    e->started = 1;
    return (PyObject *)e;
}

static PyObject *Engine_add(Engine *e, PyObject *args) {
    int fds[2];
    if (!PyArg_ParseTuple(args, "ii:add", &fds[0], &fds[1])) return NULL;
    if (!e->started) return PyErr_Format(PyExc_RuntimeError, "engine is shut down");
    for (int s = 0; s < 2; s++) {
        int flags = fcntl(fds[s], F_GETFL);
        if (flags < 0 || fcntl(fds[s], F_SETFL, flags | O_NONBLOCK) < 0) return PyErr_SetFromErrno(PyExc_OSError);
    }
    Pair *p = calloc(1, sizeof(Pair));
    if (!p) return PyErr_NoMemory();
    p->fd[0] = fds[0];
    p->fd[1] = fds[1];
    pthread_mutex_lock(&e->lock);
    p->id = e->next_id++;
    p->next = e->buckets[p->id % NBUCKETS];
    e->buckets[p->id % NBUCKETS] = p;
    kernel_attach(e, p);
    if (rearm(e, p, 0) < 0 || rearm(e, p, 1) < 0) {
        int err = errno;
        unregister(e, p);
        kernel_release(e, p);
        unlink_free(e, p);
        pthread_mutex_unlock(&e->lock);
        errno = err;
        return PyErr_SetFromErrno(PyExc_OSError); /* the fds stay the caller's */
    }
    e->live++;
    uint64_t id = p->id;
    pthread_mutex_unlock(&e->lock);
    return PyLong_FromUnsignedLongLong(id);
}

static PyObject *pending_bytes(Dir *x) {
    return PyBytes_FromStringAndSize(x->buf ? x->buf + x->off : "", (Py_ssize_t)(x->len - x->off));
}

/* Stop forwarding a live pair and hand it back: (client_fd, upstream_fd, pending_to_upstream,
 * pending_to_client, up_bytes, down_bytes); None if the pair is unknown or already done. */
static void pause_pairs(Engine *e, const uint64_t *ids, Py_ssize_t n);

static PyObject *Engine_detach(Engine *e, PyObject *args) {
    unsigned long long id;
    if (!PyArg_ParseTuple(args, "K:detach", &id)) return NULL;
    uint64_t one = id;
    pause_pairs(e, &one, 1); /* no-op for a pair that pause() already took care of */
    pthread_mutex_lock(&e->lock);
    Pair *p = find(e, id);
    if (!p || p->done) {
        pthread_mutex_unlock(&e->lock);
        Py_RETURN_NONE;
    }
    unregister(e, p);
    if (p->kernel) {
        /* gates closed and verdicts in flight finished (pause_pairs): wait until what was redirected has left */
        Py_BEGIN_ALLOW_THREADS
        uint64_t since = now_ns();
        wait_drained(e, p, 0, since);
        wait_drained(e, p, 1, since);
        Py_END_ALLOW_THREADS
        fold_counts(e, p);
        for (int d = 0; d < 2; d++) {
            stop_drain(e, p, d);
            /* the socket stays in the map (taking it out would drop bytes the kernel holds for it),
             * gate closed: Python reads it as usual; the slot frees itself when the socket closes */
            if (p->inmap[d]) e->slot_state[p->slot[d]] = SLOT_RETIRED;
        }
        p->kernel = 0;
    }
    PyObject *result = Py_BuildValue("iiNNKK", p->fd[0], p->fd[1], pending_bytes(&p->dir[0]),
                                     pending_bytes(&p->dir[1]), p->dir[0].bytes, p->dir[1].bytes);
    if (result) {
        e->live--;
        unlink_free(e, p);
    } else if (rearm(e, p, 0) < 0 || rearm(e, p, 1) < 0) {
        finish(e, p);
    }
    pthread_mutex_unlock(&e->lock);
    return result;
}

/* Close a pair's sockets (if still open) and forget it. Unknown ids are ignored. */
static PyObject *Engine_close(Engine *e, PyObject *args) {
    unsigned long long id;
    if (!PyArg_ParseTuple(args, "K:close", &id)) return NULL;
    pthread_mutex_lock(&e->lock);
    Pair *p = find(e, id);
    if (p) {
        if (!p->done) {
            unregister(e, p);
            kernel_release(e, p);
            close(p->fd[0]);
            close(p->fd[1]);
            e->live--;
        }
        unlink_free(e, p);
    }
    pthread_mutex_unlock(&e->lock);
    Py_RETURN_NONE;
}

static PyObject *Engine_stats(Engine *e, PyObject *args) {
    unsigned long long id;
    if (!PyArg_ParseTuple(args, "K:stats", &id)) return NULL;
    pthread_mutex_lock(&e->lock);
    Pair *p = find(e, id);
    unsigned long long up = 0, down = 0;
    int done = 0, kernel_dirs = 0;
    if (p) {
        up = p->dir[0].bytes + redirected(e, p, 0);
        down = p->dir[1].bytes + redirected(e, p, 1);
        done = p->done;
        kernel_dirs = p->kernel ? p->kdir[0] + p->kdir[1] : 0;
    }
    pthread_mutex_unlock(&e->lock);
    if (!p) Py_RETURN_NONE;
    return Py_BuildValue("KKOi", up, down, done ? Py_True : Py_False, kernel_dirs);
}

/* Ids of pairs that ended since the last call (drains completion_fd). */
static PyObject *Engine_completed(Engine *e, PyObject *noargs) {
    pthread_mutex_lock(&e->lock);
    uint64_t count;
    ssize_t rc = read(e->donefd, &count, sizeof count);
    (void)rc;
    PyObject *list = PyList_New((Py_ssize_t)e->ndone);
    if (list) {
        for (size_t i = 0; i < e->ndone; i++) {
            PyObject *id = PyLong_FromUnsignedLongLong(e->done[i]);
            if (!id) {
                Py_CLEAR(list);
                break;
            }
            PyList_SET_ITEM(list, (Py_ssize_t)i, id);
        }
        if (list) e->ndone = 0;
    }
    pthread_mutex_unlock(&e->lock);
    return list;
}

/* Close the kernel gates of these pairs with one barrier for all: first the gates toward a unix
 * socket (whose markers need the way back open), then the rest. Call with the GIL, without the lock. */
static void pause_pairs(Engine *e, const uint64_t *ids, Py_ssize_t n) {
    int toward_unix = 0, any = 0;
    pthread_mutex_lock(&e->lock);
    for (Py_ssize_t i = 0; i < n; i++) {
        Pair *p = find(e, ids[i]);
        if (p && !p->done) toward_unix |= pause_toward_unix(e, p);
    }
    pthread_mutex_unlock(&e->lock);
    if (toward_unix) {
        Py_BEGIN_ALLOW_THREADS
        sm_barrier();
        pthread_mutex_lock(&e->lock);
        for (Py_ssize_t i = 0; i < n; i++) {
            Pair *p = find(e, ids[i]);
            if (p && !p->done && p->kernel && !p->paused) wait_toward_unix(e, p);
        }
        pthread_mutex_unlock(&e->lock);
        Py_END_ALLOW_THREADS
    }
    pthread_mutex_lock(&e->lock);
    for (Py_ssize_t i = 0; i < n; i++) {
        Pair *p = find(e, ids[i]);
        if (p && !p->done && p->kernel && !p->paused) {
            pause_gates(e, p);
            any = 1;
        }
    }
    pthread_mutex_unlock(&e->lock);
    if (any) {
        Py_BEGIN_ALLOW_THREADS
        sm_barrier();
        Py_END_ALLOW_THREADS
    }
}

/* pause(ids): a toxic is coming for these pairs; detach() each afterwards. */
static PyObject *Engine_pause(Engine *e, PyObject *ids) {
    PyObject *seq = PySequence_Fast(ids, "pause() takes a sequence of pair ids");
    if (!seq) return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    uint64_t *want = calloc((size_t)n + 1, sizeof(uint64_t));
    if (!want) {
        Py_DECREF(seq);
        return PyErr_NoMemory();
    }
    for (Py_ssize_t i = 0; i < n && !PyErr_Occurred(); i++) want[i] = PyLong_AsUnsignedLongLong(PySequence_Fast_GET_ITEM(seq, i));
    Py_DECREF(seq);
    if (!PyErr_Occurred()) pause_pairs(e, want, n);
    free(want);
    if (PyErr_Occurred()) return NULL;
    Py_RETURN_NONE;
}

static PyObject *Engine_completion_fd(Engine *e, PyObject *noargs) { return PyLong_FromLong(e->donefd); }

static PyObject *Engine_live(Engine *e, PyObject *noargs) {
    pthread_mutex_lock(&e->lock);
    size_t live = e->live;
    pthread_mutex_unlock(&e->lock);
    return PyLong_FromSize_t(live);
}

static PyObject *Engine_shutdown(Engine *e, PyObject *noargs) {
    engine_stop(e);
    Py_RETURN_NONE;
}

static PyMethodDef Engine_methods[] = {
    {"add", (PyCFunction)Engine_add, METH_VARARGS,
     "add(client_fd, upstream_fd) -> pair id; the engine owns (and closes) both fds from now on"},
    {"detach", (PyCFunction)Engine_detach, METH_VARARGS,
     "detach(id) -> (client_fd, upstream_fd, pending_to_upstream, pending_to_client, up_bytes, down_bytes) "
     "or None if the pair ended; the caller owns the fds again"},
    {"close", (PyCFunction)Engine_close, METH_VARARGS, "close(id): close the pair's sockets and forget it"},
    {"stats", (PyCFunction)Engine_stats, METH_VARARGS,
     "stats(id) -> (up_bytes, down_bytes, closed, kernel_directions) or None"},
    {"pause", (PyCFunction)Engine_pause, METH_O, "pause(ids): stop in-kernel forwarding of these pairs (before detach)"},
    {"completed", (PyCFunction)Engine_completed, METH_NOARGS, "ids of pairs that ended since the last call"},
    {"completion_fd", (PyCFunction)Engine_completion_fd, METH_NOARGS, "an eventfd readable when pairs ended"},
    {"live", (PyCFunction)Engine_live, METH_NOARGS, "number of pairs being forwarded"},
    {"shutdown", (PyCFunction)Engine_shutdown, METH_NOARGS, "stop the thread and close every pair"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject EngineType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "chaos.proxy._fastpath.Engine",
    .tp_basicsize = sizeof(Engine),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Native forwarder for proxied connections without toxics (one epoll thread).",
    .tp_new = Engine_new,
    .tp_dealloc = (destructor)Engine_dealloc,
    .tp_methods = Engine_methods,
};

/* Could a pair with this upstream enter the sockmap now? A unix chunk is known by its sender's
 * cookie, which exists once the server has accepted the connection (callers wait a moment). */
static PyObject *upstream_ready(PyObject *module, PyObject *arg) {
    int fd = PyLong_AsLong(arg);
    if (fd == -1 && PyErr_Occurred()) return NULL;
    uint64_t key;
    if (sock_kind(fd) == KIND_UNIX && sm_key(fd, &key) < 0) Py_RETURN_FALSE;
    Py_RETURN_TRUE;
}

/* Can this process forward in the kernel? (Loads the maps and program once, then drops them.) */
static PyObject *kernel_supported(PyObject *module, PyObject *noargs) {
    SockMap probe;
    int ok;
    Py_BEGIN_ALLOW_THREADS
    ok = sm_open(&probe, 2) == 0;
    if (ok) sm_close(&probe);
    Py_END_ALLOW_THREADS
    return PyBool_FromLong(ok);
}

static PyMethodDef module_methods[] = {
    {"kernel_supported", kernel_supported, METH_NOARGS, "True if BPF sockmap forwarding works here"},
    {"upstream_ready", upstream_ready, METH_O, "upstream_ready(fd): False while a unix upstream has not accepted yet"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_fastpath", "Native forwarding engine.", -1, module_methods};

PyMODINIT_FUNC PyInit__fastpath(void) {
    if (PyType_Ready(&EngineType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (!m) return NULL;
    Py_INCREF(&EngineType);
    if (PyModule_AddObject(m, "Engine", (PyObject *)&EngineType) < 0) {
        Py_DECREF(&EngineType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
