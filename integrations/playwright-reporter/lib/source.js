'use strict';
// Where a test run comes from: commit, branch, pull request and CI job URL from the CI's own
// variables (GitHub Actions, GitLab CI, Buildkite, CircleCI, Jenkins, Azure Pipelines), else from git;
// the repository's path and remote (credentials removed) from git.

const { execFileSync } = require('node:child_process');

/** `git ARGS` in `cwd`, trimmed; `undefined` when git is missing, slow or fails. */
function git(cwd, args) {
  try {
    const out = execFileSync('git', args, {
      cwd,
      encoding: 'utf8',
      timeout: 3000,
      stdio: ['ignore', 'pipe', 'ignore'],
      windowsHide: true,
    });
    return out.trim() || undefined;
  } catch {
    return undefined;
  }
}

function nonEmpty(...values) {
  for (const value of values) {
    if (typeof value === 'string' && value.trim() && value.trim() !== 'false') return value.trim();
  }
  return undefined;
}

/** A positive PR number from text such as `123`, `refs/pull/123/merge`, `…/pull/123`. */
function prNumber(...values) {
  for (const value of values) {
    if (!value) continue;
    const match = /(?:^|\/)(\d+)(?:\/(?:merge|head))?$/.exec(String(value).trim());
    if (match && Number(match[1]) > 0) return Number(match[1]);
  }
  return undefined;
}

/** A remote URL without user, password or token: `https://x-access-token:…@github.com/a/b` must not
 * reach the store. scp-like `git@host:path` remotes carry no secret and stay as they are. */
function redactRemote(remote) {
  if (!remote) return undefined;
  try {
    const url = new URL(remote);
    if (url.username || url.password) {
      url.username = '';
      url.password = '';
    }
    return url.toString();
  } catch {
    return remote;
  }
}

function ciUrl(env) {
  if (env.GITHUB_SERVER_URL && env.GITHUB_REPOSITORY && env.GITHUB_RUN_ID) {
    const attempt = env.GITHUB_RUN_ATTEMPT ? `/attempts/${env.GITHUB_RUN_ATTEMPT}` : '';
    return `${env.GITHUB_SERVER_URL}/${env.GITHUB_REPOSITORY}/actions/runs/${env.GITHUB_RUN_ID}${attempt}`;
  }
  if (env.SYSTEM_COLLECTIONURI && env.SYSTEM_TEAMPROJECT && env.BUILD_BUILDID) {
    return `${env.SYSTEM_COLLECTIONURI}${env.SYSTEM_TEAMPROJECT}/_build/results?buildId=${env.BUILD_BUILDID}`;
  }
  return nonEmpty(env.CI_JOB_URL, env.BUILDKITE_BUILD_URL, env.CIRCLE_BUILD_URL, env.BUILD_URL);
}

/**
 * The run's origin. `env` is `process.env` (a parameter so the rules read as data), `cwd` the
 * directory git is asked in (Playwright's rootDir).
 * @returns {{commit?: string, branch?: string, pr_number?: number, ci_url?: string,
 *            repo: {path?: string, remote?: string}}}
 */
function runSource(env, cwd) {
  const githubPr = env.GITHUB_REF && env.GITHUB_REF.startsWith('refs/pull/') ? env.GITHUB_REF : undefined;
  const commit = nonEmpty(
    env.MOLAR_COMMIT,
    env.GITHUB_SHA,
    env.CI_COMMIT_SHA,
    env.BUILDKITE_COMMIT,
    env.CIRCLE_SHA1,
    env.BUILD_SOURCEVERSION,
    env.GIT_COMMIT,
  ) || git(cwd, ['rev-parse', 'HEAD']);
  const branch = nonEmpty(
    env.MOLAR_BRANCH,
    env.GITHUB_HEAD_REF, // set on pull_request events: the PR's branch, not refs/pull/N/merge
    githubPr ? undefined : env.GITHUB_REF_NAME,
    env.CI_MERGE_REQUEST_SOURCE_BRANCH_NAME,
    env.CI_COMMIT_BRANCH,
    env.CI_COMMIT_REF_NAME,
    env.BUILDKITE_BRANCH,
    env.CIRCLE_BRANCH,
    env.SYSTEM_PULLREQUEST_SOURCEBRANCH,
    env.BUILD_SOURCEBRANCHNAME,
    env.CHANGE_BRANCH,
    env.GIT_BRANCH,
  ) || (() => {
    const name = git(cwd, ['rev-parse', '--abbrev-ref', 'HEAD']);
    return name === 'HEAD' ? undefined : name; // a detached HEAD has no branch
  })();
  const pr = prNumber(
    env.MOLAR_PR_NUMBER,
    githubPr,
    env.CI_MERGE_REQUEST_IID,
    nonEmpty(env.BUILDKITE_PULL_REQUEST),
    env.CIRCLE_PULL_REQUEST,
    env.SYSTEM_PULLREQUEST_PULLREQUESTNUMBER,
    env.CHANGE_ID,
  );
  const source = { repo: {} };
  if (commit) source.commit = commit;
  if (branch) source.branch = branch;
  if (pr) source.pr_number = pr;
  const job = ciUrl(env);
  if (job) source.ci_url = job;
  const top = git(cwd, ['rev-parse', '--show-toplevel']);
  if (top) source.repo.path = top;
  const remote = redactRemote(nonEmpty(env.MOLAR_REPO_REMOTE) || git(cwd, ['remote', 'get-url', 'origin']));
  if (remote) source.repo.remote = remote;
  return source;
}

module.exports = { runSource, redactRemote, prNumber };
