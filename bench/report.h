/*
 * report.h — what a moat-bench run measured, where the broker's numbers come
 * from (/proc), and how the results are printed: a table for people and JSON
 * for bench/compare.
 */
#ifndef MOAT_BENCH_REPORT_H
#define MOAT_BENCH_REPORT_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include "bench.h"
#include "hist.h"

/* One reading of a process from /proc/PID/stat and /proc/PID/status. */
typedef struct proc_sample {
    bool ok;
    double cpu_s;    /* utime + stime */
    uint64_t rss_kb; /* VmRSS */
    uint64_t hwm_kb; /* VmHWM: the peak */
    unsigned threads;
} proc_sample;

typedef struct result {
    bool interrupted;
    char error[512];       /* why the run failed, empty when it did not */
    char first_error[320]; /* the first connection error of the run */
    double setup_s;        /* opening every connection (a storm: the whole storm) */
    double measured_s;
    uint64_t connected, failed;
    proc_sample broker_before, broker_connected, broker_after;
    double broker_cpu_s; /* in the measured window */
    double tool_cpu_s;
    double busiest_thread_cpu_s;
    uint64_t sent, delivered, payload_bytes, wire_bytes; /* in the measured window */
    uint64_t acked; /* QoS 1/2 publishes acknowledged in the measured window */
    uint64_t refused, run_errors, behind;
    uint64_t total_sent, total_recv, lost; /* whole run */
    uint64_t total_acked;                  /* whole run */
    hist lat;                              /* delivery latency, measured window */
    hist hs;                               /* TCP connect to CONNACK */
} result;

typedef struct report_context {
    const bench_opts *o;
    size_t nconns;
    uint32_t npubs, nsubs, fan;
    size_t ndevices; /* publishers acting as devices (--devices) */
} report_context;

/* Read process pid (0: leaves *s not ok). */
void proc_read(pid_t pid, proc_sample *s);

/* CPU seconds used by this process, and by one of its threads. */
double self_cpu_seconds(void);
double thread_cpu_seconds(pthread_t t);

void report_table(FILE *out, const report_context *ctx, const result *r);

/* Write JSON to path; false with errno set. */
bool report_json(const char *path, const report_context *ctx, const result *r);

/* The exit status the run deserves (see moat-bench --help). */
int report_status(const report_context *ctx, const result *r);

#endif /* MOAT_BENCH_REPORT_H */
