// Agent version precedence (semver's, without guessing at anything else) and the fleet summary the
// dashboard's "Agent versions" panel shows.
import { describe, expect, it } from 'vitest';
import agentPackage from '../../agent/package.json';
import {
  agentVersionStatus,
  CURRENT_AGENT_VERSION,
  compareVersions,
} from '../src/fleet/agent-version';
import { summarizeAgentVersions } from '../src/fleet/agent-version-counts';

describe('compareVersions', () => {
  it('orders by major, minor, patch as numbers', () => {
    expect(compareVersions('0.0.9', '0.1.0')).toBe(-1);
    expect(compareVersions('0.10.0', '0.9.9')).toBe(1);
    expect(compareVersions('1.2.3', '1.2.3')).toBe(0);
    expect(compareVersions('v1.2.3', '1.2.3')).toBe(0);
    expect(compareVersions('2.0.0', '10.0.0')).toBe(-1);
  });

  it('puts a pre-release before its release, and compares pre-releases as semver does', () => {
    const ordered = [
      '1.0.0-alpha',
      '1.0.0-alpha.1',
      '1.0.0-alpha.beta',
      '1.0.0-beta',
      '1.0.0-beta.2',
      '1.0.0-beta.11',
      '1.0.0-rc.1',
      '1.0.0',
    ];
    for (let i = 0; i + 1 < ordered.length; i += 1) {
      expect(compareVersions(ordered[i] ?? '', ordered[i + 1] ?? ''), ordered[i]).toBe(-1);
      expect(compareVersions(ordered[i + 1] ?? '', ordered[i] ?? '')).toBe(1);
    }
    expect(compareVersions('1.0.0+build.5', '1.0.0')).toBe(0);
  });

  it('says null for what is not a version', () => {
    for (const bad of ['test', '1.0', '1.0.0.0', '', '01.x.0', '1.0.0-', '1.0.0-bad..dots']) {
      expect(compareVersions(bad, '1.0.0'), bad).toBeNull();
    }
  });
});

describe('agentVersionStatus', () => {
  it('compares with the agent version in apps/agent/package.json', () => {
    expect(CURRENT_AGENT_VERSION).toBe(agentPackage.version);
    expect(agentVersionStatus(CURRENT_AGENT_VERSION)).toBe('current');
    expect(agentVersionStatus('0.0.9', '0.1.0')).toBe('outdated');
    expect(agentVersionStatus('0.1.0-rc.1', '0.1.0')).toBe('outdated');
    expect(agentVersionStatus('0.2.0', '0.1.0')).toBe('newer');
    expect(agentVersionStatus('test', '0.1.0')).toBe('unknown');
    expect(agentVersionStatus(null, '0.1.0')).toBe('unknown');
  });
});

describe('summarizeAgentVersions', () => {
  it('counts hosts per version, newest first, unknown last', () => {
    const summary = summarizeAgentVersions(
      [
        { version: null, hosts: 1, online: 0 },
        { version: '0.0.9', hosts: 3, online: 2 },
        { version: 'test', hosts: 2, online: 2 },
        { version: '0.1.0', hosts: 5, online: 5 },
        { version: '0.2.0', hosts: 1, online: 1 },
      ],
      '0.1.0',
    );
    expect(summary.versions.map((v) => [v.version, v.status])).toEqual([
      ['0.2.0', 'newer'],
      ['0.1.0', 'current'],
      ['0.0.9', 'outdated'],
      ['test', 'unknown'],
      [null, 'unknown'],
    ]);
    expect(summary).toMatchObject({
      current: '0.1.0',
      hosts: 12,
      outdated: 3,
      newer: 1,
      unknown: 3,
    });
  });
});
