#!/usr/bin/env python3
"""Crash campaign: TRIALS trials of indexing, deleting, rotating the token keys and writing to the
keepers, each with a SIGKILL of the client, a random node or a random keeper at a random moment;
the victim is restarted and the operation run again until it succeeds. After every trial:

- every image an `obscura index` reported (or a later run recovered) rebuilds byte for byte
  (those of this trial, and two older ones at random);
- every node holds the same number of committed images, that number is the number reported and
  not deleted, and no node holds a pending image;
- every node's audit log verifies;
- every secret whose generation reported success is listed.

Usage: crash_campaign.py TRIALS [SEED]. Needs OBSCURA_BIN (the obscura binary). Prints one line
per trial and a summary; writes the summary as JSON to OBSCURA_CAMPAIGN_OUT if set. Exits 1 on
any violation.
"""
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = os.environ.get("OBSCURA_BIN", "target/release/obscura")
REPO = Path(__file__).resolve().parent.parent
PASSWORD = "crash campaign password"
ID_LINE = re.compile(r"^([0-9a-f]{32})  (.*)$")
NODES, KEEPERS = 6, 3


def free_base(n):
    for _ in range(500):
        base = random.randrange(20000, 60000 - n)
        try:
            for i in range(n):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", base + i))
            return base
        except OSError:
            continue
    raise SystemExit("no free ports")


class Cluster:
    def __init__(self, work):
        self.work = work
        self.dir = work / "cluster"
        base = free_base(NODES + KEEPERS)
        # Every trial rebuilds and searches: no hourly limit should be what stops it.
        self.cli(["cluster", "init", str(self.dir), "--base-port", str(base),
                  "--keeper-base-port", str(base + NODES), "--queries-per-hour", "1000000",
                  "--fetches-per-hour", "1000000", "--keeper-budget", "1000000000"],
                 check=True)
        self.procs = {}
        for member in self.members():
            self.start(member)
        self.wait_up()
        self.cli(["register", "--cluster", str(self.dir), "--user", "admin"],
                 stdin=PASSWORD + "\n", check=True)
        self.login()

    def members(self):
        return [("node", x) for x in range(1, NODES + 1)] + \
               [("keeper", j) for j in range(1, KEEPERS + 1)]

    def config(self, member):
        kind, x = member
        return self.dir / f"{kind}{x}" / f"{kind}.json"

    def start(self, member):
        kind, x = member
        log = open(self.work / f"{kind}{x}.log", "ab")
        self.procs[member] = subprocess.Popen([BIN, kind, "run", str(self.config(member))],
                                              stdout=log, stderr=log)

    def kill(self, member):
        p = self.procs[member]
        p.send_signal(signal.SIGKILL)
        p.wait()

    def cli(self, args, stdin=None, check=False, timeout=180):
        r = subprocess.run([BIN] + args, input=stdin, capture_output=True, text=True,
                           timeout=timeout)
        if check and r.returncode != 0:
            raise RuntimeError(f"obscura {' '.join(args)}: {r.stdout}{r.stderr}")
        return r

    def spawn(self, args):
        return subprocess.Popen([BIN] + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)

    def wait_up(self, limit=60):
        deadline = time.time() + limit
        while time.time() < deadline:
            if self.cli(["status", "--cluster", str(self.dir)]).returncode == 0:
                return
            time.sleep(0.2)
        raise RuntimeError("the cluster did not come up")

    def login(self):
        self.cli(["login", "--cluster", str(self.dir), "--user", "admin"],
                 stdin=PASSWORD + "\n", check=True)

    def status(self):
        """Exit status, each node's (images, pending, key version line), and the text."""
        r = self.cli(["status", "--cluster", str(self.dir)])
        counts = []
        for line in r.stdout.splitlines():
            m = re.match(r"node (\d+): (\d+) images, (\d+) pending, (.*)$", line)
            if m:
                counts.append((int(m.group(2)), int(m.group(3)), m.group(4)))
        return r.returncode, counts, r.stdout + r.stderr

    def stop(self):
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs.values():
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()


def files():
    out = sorted((REPO / "testdata" / "photos").iterdir()) + \
        sorted((REPO / "testdata" / "derived").iterdir())
    return [f for f in out if f.suffix in (".png", ".jpg", ".jpeg")]


def main():
    trials = int(sys.argv[1])
    seed = int(sys.argv[2]) if len(sys.argv) > 2 else int(time.time())
    random.seed(seed)
    work = Path(tempfile.mkdtemp(prefix="obscura-crash-"))
    pool = files()
    cluster = Cluster(work)
    d = str(cluster.dir)
    reported = {}        # id -> file it must rebuild to
    secrets = set()      # secret names whose generation succeeded
    violations = []
    tally = {}
    midway = 0  # kills that struck while the operation was still running
    took = {"index": 0.3, "delete": 0.1, "rotate": 0.1, "secret": 0.05}
    started = time.time()
    try:
        for trial in range(1, trials + 1):
            before = len(violations)
            op = random.choice(["index", "index", "index", "delete", "rotate", "secret"])
            if op == "delete" and not reported:
                op = "index"
            victim = random.choice(["client"] + [("node", x) for x in range(1, NODES + 1)] +
                                   [("keeper", j) for j in range(1, KEEPERS + 1)])
            # Within the operation's usual time (measured on its runs so far), so most kills
            # strike while it runs.
            delay = random.uniform(0.0, 1.1 * took[op])
            batch = random.sample(pool, 8)
            target = random.choice(sorted(reported)) if op == "delete" else None
            name = f"s{trial}"
            args = {
                "index": ["index", "--cluster", d] + [str(f) for f in batch],
                "delete": ["delete", "--cluster", d, target or ""],
                "rotate": ["keys", "rotate", "--cluster", d],
                "secret": ["secret", "generate", "--cluster", d, "--name", name],
            }[op]

            def absorb(stdout):
                for line in stdout.splitlines():
                    m = ID_LINE.match(line)
                    if m and op == "index":
                        path = m.group(2)
                        if path.startswith("(indexed by an interrupted run"):
                            reported[m.group(1)] = None  # checked against its batch below
                        else:
                            reported[m.group(1)] = Path(path)

            # The operation, killed (or its victim killed) after `delay`.
            t = time.time()
            proc = cluster.spawn(args)
            time.sleep(delay)
            mid = proc.poll() is None
            midway += mid
            if victim == "client":
                proc.send_signal(signal.SIGKILL)
            else:
                cluster.kill(victim)
            try:
                out, _ = proc.communicate(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, _ = proc.communicate()
            first_ok = proc.returncode == 0
            if first_ok and not mid:
                took[op] = 0.7 * took[op] + 0.3 * (time.time() - t)
            absorb(out or "")
            if victim != "client":
                cluster.start(victim)
            cluster.wait_up()

            # Run it again until it succeeds (an interrupted rotation resumes; a delete or a
            # secret that went through says so, which counts as done).
            done = first_ok
            attempts = 0
            while not done and attempts < 5:
                attempts += 1
                t = time.time()
                r = cluster.cli(args)
                absorb(r.stdout)
                if r.returncode == 0:
                    took[op] = 0.7 * took[op] + 0.3 * (time.time() - t)
                said = r.stdout + r.stderr
                if r.returncode == 0:
                    done = True
                elif op == "delete" and "is not stored in this cluster" in said:
                    done = True
                elif op == "secret" and "exists" in said:
                    done = True
                elif "log in" in said:
                    # Keepers keep sessions across a restart: nothing may log the user out.
                    why = " ".join(said.split())[-300:]
                    violations.append(
                        f"trial {trial}: {op} needed a new login after the crash ({why})")
                    cluster.login()
                else:
                    time.sleep(1)
            if not done:
                violations.append(f"trial {trial}: {op} never succeeded after the crash: {said}")
            if op == "delete" and done:
                reported.pop(target, None)
            if op == "secret" and done:
                secrets.add(name)
            # Recovered ids rebuild to one of their batch's files.
            for image, path in list(reported.items()):
                if path is None:
                    rebuilt = work / "rebuilt"
                    cluster.cli(["get", "--cluster", d, image, "--out", str(rebuilt)])
                    data = rebuilt.read_bytes() if rebuilt.exists() else None
                    match = next((f for f in batch if data is not None and f.read_bytes() == data), None)
                    if match is None:
                        violations.append(f"trial {trial}: recovered {image} rebuilds to none of its batch")
                        reported.pop(image)
                    else:
                        reported[image] = match
                    rebuilt.unlink(missing_ok=True)

            # Checks.
            code, counts, said = cluster.status()
            if code != 0 or len(counts) != NODES:
                violations.append(f"trial {trial}: status failed: {said}")
            else:
                if any(p != 0 for _, p, _ in counts):
                    violations.append(f"trial {trial}: pending images remain: {counts}")
                if len({c for c, _, _ in counts}) != 1:
                    violations.append(f"trial {trial}: nodes disagree: {counts}")
                elif counts[0][0] != len(reported):
                    violations.append(f"trial {trial}: nodes hold {counts[0][0]} images, "
                                      f"{len(reported)} were reported")
                # Every node on one key version, none moving (a finished or resumed rotation).
                if len({v for _, _, v in counts}) != 1 or "moving" in counts[0][2]:
                    violations.append(f"trial {trial}: key versions differ: {counts}")
            check = [i for i, p in reported.items() if p in batch]
            check += random.sample(sorted(reported), min(2, len(reported)))
            for image in set(check):
                rebuilt = work / "rebuilt"
                r = cluster.cli(["get", "--cluster", d, image, "--out", str(rebuilt)])
                if r.returncode != 0 or rebuilt.read_bytes() != reported[image].read_bytes():
                    violations.append(f"trial {trial}: {image} does not rebuild: {r.stderr.strip()}")
                elif "warning" in r.stderr or "not used" in r.stderr:
                    # A node whose share is missing or bad: rebuilt from the others, but lost there.
                    violations.append(f"trial {trial}: {image}: {r.stderr.strip()}")
                rebuilt.unlink(missing_ok=True)
            # Searches still find what is stored, under whatever key version is served now.
            if reported:
                image = random.choice(sorted(reported))
                r = cluster.cli(["search", "--cluster", d, str(reported[image]), "--json"])
                found = json.loads(r.stdout)["results"] if r.returncode == 0 else []
                if not any(m["distance"] == 0 for m in found):
                    violations.append(f"trial {trial}: a search for {reported[image].name} "
                                      f"found nothing at distance 0: {r.stderr.strip()}")
            r = cluster.cli(["audit", "verify", "--cluster", d])
            if r.returncode != 0:
                violations.append(f"trial {trial}: audit verify: {r.stdout}{r.stderr}")
            if secrets:
                r = cluster.cli(["secret", "list", "--cluster", d])
                listed = set(re.findall(r"\bs\d+\b", r.stdout))
                missing = sorted(secrets - listed)
                if r.returncode != 0 or missing:
                    violations.append(f"trial {trial}: secrets not listed: {missing} {r.stderr}")
                # And one rebuilds from the keepers.
                name = random.choice(sorted(secrets))
                ids = [m.group(1) for line in r.stdout.splitlines()
                       for m in [re.search(r"([0-9a-f]{32}).*\b" + name + r"\b", line)] if m]
                out = work / "secret"
                r = cluster.cli(["secret", "get", "--cluster", d, ids[0] if ids else name,
                                 "--out", str(out)])
                if r.returncode != 0 or not out.exists() or out.stat().st_size != 32:
                    violations.append(f"trial {trial}: secret {name} does not rebuild: "
                                      f"{r.stdout}{r.stderr}")
                out.unlink(missing_ok=True)
            who = victim if victim == "client" else f"{victim[0]} {victim[1]}"
            key = f"{op}/{who.split()[0]}"
            tally[key] = tally.get(key, 0) + 1
            for v in violations[before:]:
                print(f"  VIOLATION {v}", flush=True)
            when = "mid-way" if mid else "after it"
            print(f"trial {trial:>4}: {op:<6} kill {who:<9} after {delay:.2f} s ({when}): "
                  f"{len(reported)} images, {len(violations)} violations so far", flush=True)
    finally:
        cluster.stop()
    summary = {
        "trials": trials,
        "seed": seed,
        "seconds": round(time.time() - started, 1),
        "kills_while_running": midway,
        "images_reported": len(reported),
        "by_operation_and_victim": tally,
        "violations": violations,
    }
    print(json.dumps(summary, indent=2))
    if os.environ.get("OBSCURA_CAMPAIGN_OUT"):
        Path(os.environ["OBSCURA_CAMPAIGN_OUT"]).write_text(json.dumps(summary, indent=2))
    if violations:
        print(f"kept for reading: {work}")
        sys.exit(1)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
