// Loaded into every node process a rehearsed job starts (scripts/ci/rehearse.sh sets
// NODE_OPTIONS=--require <this file>): the JavaScript actions' counterpart of env-probe.sh.
"use strict";
try {
  const env = process.env;
  if (env.GITHUB_JOB && env.REHEARSAL_OUT) {
    const fs = require("fs");
    const path = require("path");
    const crypto = require("crypto");
    const mark = path.join(env.REHEARSAL_OUT, "env", "marks", `${env.GITHUB_JOB}.${env.GITHUB_ACTION || "none"}.node`);
    if (!fs.existsSync(mark)) {
      fs.mkdirSync(path.dirname(mark), { recursive: true });
      fs.writeFileSync(mark, "");
      const hashed = {};
      for (const [k, v] of Object.entries(env)) {
        if (v) hashed[k] = crypto.createHash("sha256").update(v).digest("hex").slice(0, 16);
      }
      const line = { job: env.GITHUB_JOB, action: env.GITHUB_ACTION || "", via: "node", env: hashed };
      fs.appendFileSync(path.join(env.REHEARSAL_OUT, "env", "steps.jsonl"), JSON.stringify(line) + "\n");
    }
  }
} catch (e) {
  // A probe never breaks the step it watches.
}
