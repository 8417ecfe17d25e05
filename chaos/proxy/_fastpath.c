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
#include <unistd.h>

#define NBUCKETS 1024
#define SCRATCH (64 * 1024)
#define MAX_EVENTS 64

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
    if (!p->dir[s].eof && p->dir[s].len == 0) want |= EPOLLIN;
    if (p->dir[1 - s].len) want |= EPOLLOUT;
    if (want == p->mask[s]) return 0;
    struct epoll_event ev = {.events = want, .data.u64 = (p->id << 1) | (uint64_t)s};
    int op = want == 0 ? EPOLL_CTL_DEL : p->mask[s] == 0 ? EPOLL_CTL_ADD : EPOLL_CTL_MOD;
    int rc = epoll_ctl(e->epfd, op, p->fd[s], &ev);
    p->mask[s] = want;
    return rc;
}

static void finish(Engine *e, Pair *p) {
    unregister(e, p);
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
    if ((p->mask[s] & EPOLLIN) && (ev & (EPOLLIN | EPOLLHUP | EPOLLERR))) failed |= pump(e, p, s);
    if (!failed && (p->mask[s] & EPOLLOUT) && (ev & (EPOLLOUT | EPOLLHUP | EPOLLERR)))
        failed |= pump(e, p, 1 - s);
    if (failed || (ev & EPOLLERR) || (p->dir[0].shut && p->dir[1].shut)) {
        finish(e, p);
        return;
    }
    if (rearm(e, p, 0) < 0 || rearm(e, p, 1) < 0) finish(e, p);
}

static void *run(void *arg) {
    Engine *e = arg;
    struct epoll_event evs[MAX_EVENTS];
    for (;;) {
        int n = epoll_wait(e->epfd, evs, MAX_EVENTS, -1);
        if (n < 0 && errno != EINTR) break;
        if (n <= 0) continue;
        pthread_mutex_lock(&e->lock);
        if (e->stop) {
            pthread_mutex_unlock(&e->lock);
            break;
        }
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
    pthread_mutex_destroy(&e->lock);
    free(e->done);
    Py_TYPE(e)->tp_free((PyObject *)e);
}

static PyObject *Engine_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, ":Engine", kwlist)) return NULL;
    Engine *e = (Engine *)type->tp_alloc(type, 0); /* zeroed */
    if (!e) return NULL;
    pthread_mutex_init(&e->lock, NULL);
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
    if (rearm(e, p, 0) < 0 || rearm(e, p, 1) < 0) {
        int err = errno;
        unregister(e, p);
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
static PyObject *Engine_detach(Engine *e, PyObject *args) {
    unsigned long long id;
    if (!PyArg_ParseTuple(args, "K:detach", &id)) return NULL;
    pthread_mutex_lock(&e->lock);
    Pair *p = find(e, id);
    if (!p || p->done) {
        pthread_mutex_unlock(&e->lock);
        Py_RETURN_NONE;
    }
    unregister(e, p);
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
    unsigned long long up = p ? p->dir[0].bytes : 0, down = p ? p->dir[1].bytes : 0;
    int done = p ? p->done : 0;
    pthread_mutex_unlock(&e->lock);
    if (!p) Py_RETURN_NONE;
    return Py_BuildValue("KKO", up, down, done ? Py_True : Py_False);
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
    {"stats", (PyCFunction)Engine_stats, METH_VARARGS, "stats(id) -> (up_bytes, down_bytes, closed) or None"},
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

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_fastpath", "Native forwarding engine.", -1, NULL};

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
