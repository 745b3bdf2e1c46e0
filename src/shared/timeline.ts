import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';

/** One event of a step timeline: when (ms since the epoch, sub-millisecond resolution) and what. */
export type TimelineEvent = [at: number, name: string];

/** Where this process writes its events at exit: null until the first event reads GDP_TIMELINE, undefined when off. */
let dir: string | undefined | null = null;
let events: TimelineEvent[] = [];

/**
 * Records event `name` ('process: what happened') of the opt-in step timeline. With GDP_TIMELINE=DIR in the
 * environment (read at the first event, inherited by the worker processes a coordinator starts), every process
 * records its steps' events at `performance.timeOrigin + performance.now()` (comparable across the processes of one
 * machine) and writes them at exit to DIR/timeline-PID.json (an unwritable DIR throws there); bench/step_timeline.ts
 * merges them into the timeline of each step. Without it an event costs one comparison. The events are what a step
 * is made of: the workers' compute and copy-out, checks and upload, the exchange through the coordinator, the commit
 * and each replica's update, and the coordinator's time between steps.
 */
export function timelineEvent(name: string): void {
  if (dir === null) {
    dir = process.env.GDP_TIMELINE || undefined;
    if (dir) process.once('exit', () => dir && writeFileSync(join(dir, `timeline-${process.pid}.json`), JSON.stringify(events)));
  }
  if (dir) events.push([performance.timeOrigin + performance.now(), name]);
}

/** This process's events so far, handed over instead of written at exit (the bench reads its own this way). */
export function takeTimeline(): TimelineEvent[] {
  const taken = events;
  events = [];
  dir = undefined;
  return taken;
}
