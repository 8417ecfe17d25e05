/* In-kernel forwarding for proxied pairs with no toxic (BPF sockmap), used by _fastpath.c.
 *
 * Each socket of a pair sits in one sockmap slot. An SK_SKB verdict program runs on every chunk
 * the kernel receives on such a socket and redirects it to the peer's slot (sent out by the kernel,
 * no wakeup of this process) -- but only while the socket's gate is open: the route says how many
 * bytes userspace consumed of what the program passed to it; unequal means "pass to userspace".
 * Closing a gate (consumed = SM_CLOSED) therefore never strands data: later chunks are read by
 * userspace, earlier ones were already queued to the peer. Sockets stay in the map until closed,
 * because removing one drops what the kernel queued on it.
 */
#ifndef CACHESTORM_SOCKMAP_H
#define CACHESTORM_SOCKMAP_H

#include <stdint.h>

#define SM_CLOSED UINT64_MAX
#define SM_MARKER UINT32_MAX /* own_slot of a marker route: redirect into the peer's receive queue */

typedef struct {
    int sockmap, routes, counts, prog; /* -1 when not loaded */
    uint32_t nslots;
} SockMap;

/* 0 on success; -1 with errno when BPF or sockmap is not available (not root, old kernel...) */
int sm_open(SockMap *m, uint32_t nslots);
void sm_close(SockMap *m);

int sm_cookie(int fd, uint64_t *cookie);
int sm_route_set(SockMap *m, uint64_t cookie, uint32_t peer_slot, uint32_t own_slot, uint64_t consumed);
int sm_route_get(SockMap *m, uint64_t cookie, uint32_t *peer_slot, uint32_t *own_slot, uint64_t *consumed);
int sm_counts(SockMap *m, uint64_t cookie, uint64_t *passed, uint64_t *redirected);
void sm_forget(SockMap *m, uint64_t cookie);   /* drop the route and counters of a closed socket */
int sm_insert(SockMap *m, uint32_t slot, int fd, uint64_t key); /* key: see sm_key */
/* The cookie the program looks routes up by for chunks fd receives: fd's own for TCP, its peer's
 * for a unix socket (-1 until the server has accepted the connection). */
int sm_key(int fd, uint64_t *key);
int sm_rmem(int fd); /* bytes charged to fd's receive memory (unix: only what the kernel redirected into it) */
int sm_inq(int fd);  /* bytes waiting in fd's receive queue */
void sm_remove(SockMap *m, uint32_t slot);
int sm_slot_used(SockMap *m, uint32_t slot); /* 1 used, 0 empty (its socket closed), -1 error */
int sm_poke(int fd);                          /* run the verdict on bytes queued before insertion */
int sm_written(int fd, uint64_t *bytes);      /* bytes handed to this TCP socket so far (lower bound) */
void sm_settle(int fd);                       /* the verdict has run on everything fd received so far */
void sm_barrier(void);                        /* every verdict run in progress has finished */

#endif
