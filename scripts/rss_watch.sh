#!/bin/bash
# Runs a command, sampling its RssAnon (its own memory) and RssFile (mapped files, page
# cache) every 0.5 s from /proc/PID/status; prints the peaks in kB. The command's output goes
# to /tmp/rss_cmd.log.
#   scripts/rss_watch.sh target/release/elbo train --data counts --data-path cells1m.elbo --epochs 1
"$@" > /tmp/rss_cmd.log 2>&1 &
pid=$!
peak_anon=0; peak_file=0
while kill -0 $pid 2>/dev/null; do
  a=$(awk '/RssAnon/{print $2}' /proc/$pid/status 2>/dev/null); f=$(awk '/RssFile/{print $2}' /proc/$pid/status 2>/dev/null)
  [ -n "$a" ] && [ "$a" -gt "$peak_anon" ] && peak_anon=$a
  [ -n "$f" ] && [ "$f" -gt "$peak_file" ] && peak_file=$f
  sleep 0.5
done
wait $pid; echo "exit $? peak RssAnon ${peak_anon} kB, peak RssFile ${peak_file} kB"
