/*
 * What the raw ledger's row layout costs SQLite alone, for issue 12's end-to-end target.
 * Not part of `make bench`: a one-off measurement, kept so that its figures can be reproduced.
 *
 *   gcc -O2 -o /tmp/raw-row-layout bench/experiments/raw-row-layout.c -lsqlite3
 *   for m in 0 1 2 3; do /tmp/raw-row-layout $m 1000000 /tmp/raw-row-layout.db; done
 *
 * 1,000,000 synthetic events, 1,000 per fsync'd commit (WAL, synchronous=FULL, 64 MiB cache,
 * a passive checkpoint every 50 commits, on this thread), time-ordered keys with 1% late. The CPU
 * figure includes making the synthetic values in the loop (random numbers, snprintf): an upper
 * bound, alike for every mode but mode 2, which makes fewer of them.
 *   mode 0  the collector's raw_events row today: 13 columns (schema 7), PRIMARY KEY (ts, fingerprint)
 *   mode 1  the row of tally-bench's "SQLite floor": 6 columns
 *   mode 2  only the dedup key per event (ts, fingerprint, batch, index) and one 24 KB blob per
 *           batch (the batch's compressed payload: ~24 bytes per event on the wire)
 *   mode 3  a leaner row of the same events: the event id as 16 bytes, status and billing period
 *           as integers, the agent and received time left to the batch's own record
 * Measured 2026-12-07 11:20 UTC on the project's 2-core machine, three runs each:
 *   mode 0  314,886-345,700 events/s, 2.54-2.76 us of CPU per event
 *   mode 1  453,545-471,115 events/s, 1.85-1.94 us
 *   mode 2  479,201-600,936 events/s, 1.47-1.84 us
 * and, alternating 0 / 3 / 1 three times at 11:20: mode 0 267,925-325,714 (2.67-3.28 us), mode 3
 * 371,712-395,373 (2.22-2.36 us), mode 1 320,672-460,629 (1.90-2.07 us).
 * The collector's writer spends 2.61 us per event in all (tally-bench ingest, same hour): the
 * row itself is most of it; a leaner row saves ~0.4-0.5 us of it, and even a 24-byte key costs
 * ~1.5 us per event as a B-tree insert.
 */
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
static double now(clockid_t c){struct timespec t;clock_gettime(c,&t);return t.tv_sec+t.tv_nsec/1e9;}
static unsigned long long s=88172645463325252ULL; static unsigned long long rnd(){s^=s<<13;s^=s>>7;s^=s<<17;return s;}
static void ex(sqlite3*db,const char*q){char*e=0;if(sqlite3_exec(db,q,0,0,&e)!=SQLITE_OK){fprintf(stderr,"%s: %s\n",q,e);exit(1);}}
int main(int argc,char**argv){
  if(argc<4){fprintf(stderr,"usage: %s MODE(0|1|2|3) EVENTS DBPATH\n",argv[0]);return 2;}
  int mode=atoi(argv[1]); int N=atoi(argv[2]); const char*path=argv[3];
  char p2[512]; unlink(path); snprintf(p2,512,"%s-wal",path); unlink(p2); snprintf(p2,512,"%s-shm",path); unlink(p2);
  sqlite3*db; sqlite3_open(path,&db);
  ex(db,"PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA cache_size=-65536; PRAGMA wal_autocheckpoint=0;");
  if(mode==0) ex(db,"CREATE TABLE raw(ts INTEGER NOT NULL, fingerprint BLOB NOT NULL, tenant TEXT NOT NULL, metric TEXT NOT NULL, quantity TEXT NOT NULL, event_id TEXT, properties BLOB NOT NULL, status TEXT NOT NULL, billed_in TEXT, agent TEXT NOT NULL, batch_seq INTEGER NOT NULL, batch_index INTEGER NOT NULL, received_at INTEGER NOT NULL, PRIMARY KEY(ts,fingerprint)) WITHOUT ROWID");
  if(mode==1) ex(db,"CREATE TABLE raw(ts INTEGER NOT NULL, fingerprint BLOB NOT NULL, tenant TEXT NOT NULL, metric TEXT NOT NULL, quantity TEXT NOT NULL, properties BLOB NOT NULL, PRIMARY KEY(ts,fingerprint)) WITHOUT ROWID");
  if(mode==3) ex(db,"CREATE TABLE raw(ts INTEGER NOT NULL, fingerprint BLOB NOT NULL, tenant TEXT NOT NULL, metric TEXT NOT NULL, quantity TEXT NOT NULL, event_id BLOB, properties BLOB NOT NULL, status INTEGER NOT NULL, billed_in INTEGER, batch INTEGER NOT NULL, batch_index INTEGER NOT NULL, PRIMARY KEY(ts,fingerprint)) WITHOUT ROWID");
  if(mode==2){ ex(db,"CREATE TABLE raw(ts INTEGER NOT NULL, fingerprint BLOB NOT NULL, batch INTEGER NOT NULL, idx INTEGER NOT NULL, PRIMARY KEY(ts,fingerprint)) WITHOUT ROWID"); ex(db,"CREATE TABLE payloads(batch INTEGER PRIMARY KEY, payload BLOB NOT NULL)"); }
  sqlite3_stmt*ins,*pay=0;
  const char*q= mode==0?"INSERT OR IGNORE INTO raw VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13)": mode==1?"INSERT OR IGNORE INTO raw VALUES(?1,?2,?3,?4,?5,?6)": mode==3?"INSERT OR IGNORE INTO raw VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11)":"INSERT OR IGNORE INTO raw VALUES(?1,?2,?3,?4)";
  sqlite3_prepare_v2(db,q,-1,&ins,0);
  if(mode==2) sqlite3_prepare_v2(db,"INSERT INTO payloads VALUES(?1,?2)",-1,&pay,0);
  unsigned char blob[24000]; for(int i=0;i<24000;i++) blob[i]=rnd();
  long long ts=1772000000000000LL; double c0=now(CLOCK_THREAD_CPUTIME_ID), w0=now(CLOCK_MONOTONIC);
  for(int b=0;b<N/1000;b++){
    ex(db,"BEGIN");
    for(int i=0;i<1000;i++){
      ts+= rnd()%5000; long long t= ts - (rnd()%100==0 ? (long long)(rnd()%3600000000LL):0);
      unsigned char fp[16]; for(int k=0;k<16;k+=8){unsigned long long r=rnd(); memcpy(fp+k,&r,8);}
      char tenant[16]; snprintf(tenant,16,"tenant-%04d",(int)(rnd()%1000));
      const char* metrics[4]={"api_calls","storage_gb","compute_ms","egress_mb"};
      char uuid[40]; snprintf(uuid,40,"%08x-%04x-%04x-%04x-%012llx",(unsigned)rnd(),(unsigned)rnd()&0xffff,(unsigned)rnd()&0xffff,(unsigned)rnd()&0xffff,rnd()&0xffffffffffffULL);
      unsigned char props[40]; for(int k=0;k<40;k++) props[k]='a'+rnd()%26;
      sqlite3_bind_int64(ins,1,t); sqlite3_bind_blob(ins,2,fp,16,SQLITE_STATIC);
      if(mode==2){ sqlite3_bind_int64(ins,3,b); sqlite3_bind_int(ins,4,i); }
      else { sqlite3_bind_text(ins,3,tenant,-1,SQLITE_STATIC); sqlite3_bind_text(ins,4,metrics[rnd()%4],-1,SQLITE_STATIC); sqlite3_bind_text(ins,5,"1",1,SQLITE_STATIC);
        if(mode==0){ sqlite3_bind_text(ins,6,uuid,36,SQLITE_STATIC); sqlite3_bind_blob(ins,7,props,40,SQLITE_STATIC); sqlite3_bind_text(ins,8,"accepted",8,SQLITE_STATIC); sqlite3_bind_text(ins,9,"2026-03",7,SQLITE_STATIC); sqlite3_bind_text(ins,10,"bench-agent",11,SQLITE_STATIC); sqlite3_bind_int64(ins,11,b); sqlite3_bind_int(ins,12,i); sqlite3_bind_int64(ins,13,ts);}
        else if(mode==3){ sqlite3_bind_blob(ins,6,fp,16,SQLITE_STATIC); sqlite3_bind_blob(ins,7,props,40,SQLITE_STATIC); sqlite3_bind_int(ins,8,0); sqlite3_bind_int(ins,9,202603); sqlite3_bind_int64(ins,10,b); sqlite3_bind_int(ins,11,i);}
        else sqlite3_bind_blob(ins,6,props,40,SQLITE_STATIC);
      }
      if(sqlite3_step(ins)!=SQLITE_DONE){fprintf(stderr,"step %s\n",sqlite3_errmsg(db));exit(1);} sqlite3_reset(ins);
    }
    if(mode==2){ sqlite3_bind_int64(pay,1,b); sqlite3_bind_blob(pay,2,blob,24000,SQLITE_STATIC); sqlite3_step(pay); sqlite3_reset(pay);}
    ex(db,"COMMIT");
    if(b%50==49) sqlite3_wal_checkpoint_v2(db,0,SQLITE_CHECKPOINT_PASSIVE,0,0);
  }
  double c1=now(CLOCK_THREAD_CPUTIME_ID), w1=now(CLOCK_MONOTONIC);
  printf("mode %d: %.0f events/s, %.3f us CPU/event (checkpoints included)\n",mode,N/(w1-w0),(c1-c0)*1e6/N);
  sqlite3_close(db); return 0;
}
