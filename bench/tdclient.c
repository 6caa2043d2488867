/* tdclient: C load generator for scripts/bench (adapted from shared/peerbench/src/pbclient.c).
 *
 * usage: tdclient MODE SOCKPATH N CONNS RECFILE RECSIZE SEQOFF [BATCH [TAILFILE]]
 *
 *   RECFILE  K fixed-size records of RECSIZE bytes each, already framed for the
 *            receiver: a 4-byte big-endian length + msgpack Emit body (traced), or a
 *            line ending in '\n' (rsyslog imptcp).  Connection i sends records
 *            (i + j*CONNS) mod K for j = 0, 1, ...: with K == CONNS every connection
 *            talks to its own session, with K = 10000 the load is spread over them all.
 *   SEQOFF   offset (inside a record) of a 10-digit field overwritten with the global
 *            sequence number 0..N-1, so the receiver's output can be checked for
 *            loss and duplicates.  A comma-separated list of B offsets means each
 *            record carries B events (an `emit_batch` frame): it gets B consecutive
 *            sequence numbers, and N counts events (each connection's share must be a
 *            multiple of B).
 *   MODE  stream  send records back to back, coalesced into writes of up to BATCH
 *                 bytes (default 65536, like traced.Client's FLUSH_AT; 1 = one
 *                 write(2) per record).  When TAILFILE is given (a framed traced
 *                 `sync` request), each connection sends it last and waits for one
 *                 length-prefixed reply frame, which must be `synced`: the daemon has
 *                 then written everything this connection sent.
 *         ack     strict request/response: write one record, read one length-prefixed
 *                 reply frame (must be an `ack`); the round trip is recorded.
 *   N     total records, split evenly over CONNS connections (one thread each).
 *
 * Environment (optional):
 *   TDC_HEAD=FILE TDC_HEADSIZE=S  FILE holds fixed-size framed requests of S bytes (traced
 *                 `hello`s, each with its own client_id): connection i sends request i mod K
 *                 right after connecting and reads one reply frame, which must be `welcome`.
 *                 This happens before the barrier: it is not timed.
 *   TDC_SEQ64=OFF[,OFF...]  offsets (one per SEQOFF) of 8-byte big-endian msgpack uint64
 *                 fields (traced's `seq`), stamped with TDC_SEQBASE (default 2^32) + the
 *                 event's sequence number: every event carries its own idempotency key.
 *         All threads connect first, then start together (barrier); the clock runs
 *         from the barrier to the last thread's end.
 * prints one JSON object on stdout.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

enum { M_STREAM, M_ACK };
static int mode;
static const char *path;
static long total, nrec, recsize, batch = 65536;
static long seqoffs[4096];
static int nseq = 1;
static long seq64offs[4096];
static int nseq64;
static unsigned long long seqbase = 1ULL << 32;
static char *head;
static long headsize, nhead;
static int conns;
static char *recs, *tail;
static size_t taillen;
static double *lat;
static pthread_barrier_t start_barrier;
static double t_start;

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static int write_all(int fd, const char *b, size_t n) {
    while (n) {
        ssize_t w = write(fd, b, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        b += w;
        n -= (size_t)w;
    }
    return 0;
}

static int read_all(int fd, char *b, size_t n) {
    while (n) {
        ssize_t r = read(fd, b, n);
        if (r < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        if (r == 0) return -1;
        b += r;
        n -= (size_t)r;
    }
    return 0;
}

/* read one length-prefixed frame into buf (cap bytes); returns its body length or -1 */
static long read_frame(int fd, char *buf, size_t cap) {
    unsigned char h[4];
    if (read_all(fd, (char *)h, 4) < 0) return -1;
    size_t n = ((size_t)h[0] << 24) | ((size_t)h[1] << 16) | ((size_t)h[2] << 8) | h[3];
    if (n > cap) return -1;
    if (read_all(fd, buf, n) < 0) return -1;
    return (long)n;
}

/* stamp the record's B sequence fields with first, first+1, ... */
static void stamp(char *p, long first) {
    char tmp[11];
    for (int b = 0; b < nseq; b++) {
        snprintf(tmp, sizeof tmp, "%010ld", first + b);
        memcpy(p + seqoffs[b], tmp, 10);
        if (b < nseq64) {
            unsigned long long v = seqbase + (unsigned long long)(first + b);
            for (int k = 7; k >= 0; k--, v >>= 8) p[seq64offs[b] + k] = (char)(v & 0xff);
        }
    }
}

static int has(const char *body, long n, const char *needle) {
    return memmem(body, (size_t)n, needle, strlen(needle)) != NULL;
}

typedef struct { int id; long first, count; double end; } targ;

static void *worker(void *arg) {
    targ *a = arg;
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    strncpy(sa.sun_path, path, sizeof sa.sun_path - 1);
    for (int tries = 0; connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0; tries++) {
        if (tries > 2000) { perror("connect"); exit(2); }
        usleep(1000);
    }
    size_t cap = (size_t)(batch > recsize ? batch : recsize);
    char *out = malloc(cap + (size_t)recsize);
    char reply[65536];
    size_t used = 0;
    if (head) {
        if (write_all(fd, head + (a->id % nhead) * headsize, (size_t)headsize) < 0) { perror("write head"); exit(3); }
        long n = read_frame(fd, reply, sizeof reply);
        if (n < 0 || !has(reply, n, "welcome")) {
            fprintf(stderr, "no welcome after the head request: %.*s\n", (int)(n > 200 ? 200 : (n < 0 ? 0 : n)), reply);
            exit(5);
        }
    }
    pthread_barrier_wait(&start_barrier);
    for (long j = 0; j < a->count / nseq; j++) {
        long seq = a->first + j * nseq;
        const char *rec = recs + ((a->id + j * conns) % nrec) * recsize;
        if (mode == M_ACK) {
            memcpy(out, rec, (size_t)recsize);
            stamp(out, seq);
            double t0 = now();
            if (write_all(fd, out, (size_t)recsize) < 0) { perror("write"); exit(3); }
            long n = read_frame(fd, reply, sizeof reply);
            if (n < 0) { fprintf(stderr, "reply read failed\n"); exit(4); }
            lat[seq / nseq] = now() - t0;
            if (!has(reply, n, "\xa3" "ack")) {
                fprintf(stderr, "unexpected reply: %.*s\n", (int)(n > 200 ? 200 : n), reply);
                exit(5);
            }
        } else {
            memcpy(out + used, rec, (size_t)recsize);
            stamp(out + used, seq);
            used += (size_t)recsize;
            if ((long)used >= batch) {
                if (write_all(fd, out, used) < 0) { perror("write"); exit(3); }
                used = 0;
            }
        }
    }
    if (used && write_all(fd, out, used) < 0) { perror("write"); exit(3); }
    if (mode == M_STREAM && tail) {
        if (write_all(fd, tail, taillen) < 0) { perror("write tail"); exit(3); }
        long n = read_frame(fd, reply, sizeof reply);
        if (n < 0) { fprintf(stderr, "sync reply read failed\n"); exit(4); }
        if (!has(reply, n, "synced")) {
            fprintf(stderr, "unexpected reply to sync: %.*s\n", (int)(n > 200 ? 200 : n), reply);
            exit(5);
        }
    }
    a->end = now();
    shutdown(fd, SHUT_WR);
    close(fd);
    free(out);
    return NULL;
}

static int cmpd(const void *x, const void *y) {
    double a = *(const double *)x, b = *(const double *)y;
    return (a > b) - (a < b);
}

static char *slurp(const char *f, size_t *len) {
    int fd = open(f, O_RDONLY);
    if (fd < 0) { perror(f); exit(1); }
    struct stat st;
    fstat(fd, &st);
    char *b = malloc((size_t)st.st_size + 1);
    if (read_all(fd, b, (size_t)st.st_size) < 0) { perror(f); exit(1); }
    close(fd);
    *len = (size_t)st.st_size;
    return b;
}

int main(int argc, char **argv) {
    if (argc < 8) {
        fprintf(stderr, "usage: %s stream|ack SOCKPATH N CONNS RECFILE RECSIZE SEQOFF [BATCH [TAILFILE]]\n", argv[0]);
        return 1;
    }
    if (!strcmp(argv[1], "stream")) mode = M_STREAM;
    else if (!strcmp(argv[1], "ack")) mode = M_ACK;
    else { fprintf(stderr, "bad mode\n"); return 1; }
    path = argv[2];
    total = atol(argv[3]);
    conns = atoi(argv[4]);
    recsize = atol(argv[6]);
    nseq = 0;
    for (char *tok = strtok(argv[7], ","); tok && nseq < 4096; tok = strtok(NULL, ",")) seqoffs[nseq++] = atol(tok);
    if (nseq == 0) { fprintf(stderr, "no SEQOFF\n"); return 1; }
    if (argc > 8) batch = atol(argv[8]);
    if (batch < 1) batch = 1;
    size_t len;
    recs = slurp(argv[5], &len);
    const char *env = getenv("TDC_SEQ64");
    if (env && *env) {
        char *dup = strdup(env);
        for (char *tok = strtok(dup, ","); tok && nseq64 < 4096; tok = strtok(NULL, ",")) seq64offs[nseq64++] = atol(tok);
        free(dup);
        if (nseq64 != nseq) { fprintf(stderr, "TDC_SEQ64 needs as many offsets as SEQOFF\n"); return 1; }
        for (int b = 0; b < nseq64; b++)
            if (seq64offs[b] < 0 || seq64offs[b] + 8 > recsize) { fprintf(stderr, "bad TDC_SEQ64\n"); return 1; }
    }
    if ((env = getenv("TDC_SEQBASE")) && *env) seqbase = strtoull(env, NULL, 10);
    if ((env = getenv("TDC_HEAD")) && *env) {
        size_t hlen;
        head = slurp(env, &hlen);
        headsize = getenv("TDC_HEADSIZE") ? atol(getenv("TDC_HEADSIZE")) : 0;
        if (headsize <= 0 || hlen == 0 || hlen % (size_t)headsize) {
            fprintf(stderr, "TDC_HEAD size %zu is not a multiple of TDC_HEADSIZE\n", hlen);
            return 1;
        }
        nhead = (long)(hlen / (size_t)headsize);
    }
    int bad_off = 0;
    for (int b = 0; b < nseq; b++) if (seqoffs[b] < 0 || seqoffs[b] + 10 > recsize) bad_off = 1;
    if (recsize <= 0 || len % (size_t)recsize || bad_off) {
        fprintf(stderr, "record file size %zu is not a multiple of %ld\n", len, recsize);
        return 1;
    }
    nrec = (long)(len / (size_t)recsize);
    if (argc > 9) tail = slurp(argv[9], &taillen);
    long per0 = total / conns;
    if (per0 % nseq || (total - per0 * (conns - 1)) % nseq) {
        fprintf(stderr, "each connection's share of N must be a multiple of %d events\n", nseq);
        return 1;
    }
    long nlat = total / nseq;
    if (mode == M_ACK) lat = calloc((size_t)nlat, sizeof(double));
    pthread_t th[conns];
    targ ta[conns];
    long per = total / conns;
    pthread_barrier_init(&start_barrier, NULL, (unsigned)conns + 1);
    for (int i = 0; i < conns; i++) {
        ta[i] = (targ){i, i * per, (i == conns - 1) ? total - i * per : per, 0};
        pthread_create(&th[i], NULL, worker, &ta[i]);
    }
    pthread_barrier_wait(&start_barrier);
    t_start = now();
    for (int i = 0; i < conns; i++) pthread_join(th[i], NULL);
    double last = 0;
    for (int i = 0; i < conns; i++) if (ta[i].end > last) last = ta[i].end;
    double el = last - t_start;
    printf("{\"mode\":\"%s\",\"n\":%ld,\"conns\":%d,\"elapsed_s\":%.6f,\"start_mono\":%.6f,\"msgs_per_s\":%.1f",
           argv[1], total, conns, el, t_start, total / el);
    if (lat) {
        qsort(lat, (size_t)nlat, sizeof(double), cmpd);
        double sum = 0;
        for (long i = 0; i < nlat; i++) sum += lat[i];
        printf(",\"lat_us\":{\"mean\":%.1f,\"p50\":%.1f,\"p90\":%.1f,\"p99\":%.1f,\"p999\":%.1f,\"max\":%.1f}",
               sum / nlat * 1e6, lat[nlat / 2] * 1e6, lat[(long)(nlat * 0.9)] * 1e6,
               lat[(long)(nlat * 0.99)] * 1e6, lat[(long)(nlat * 0.999)] * 1e6, lat[nlat - 1] * 1e6);
    }
    printf("}\n");
    return 0;
}
