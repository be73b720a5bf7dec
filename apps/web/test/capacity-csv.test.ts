// The pure parts of the capacity and devices pages: the CSV the "Download CSV" button saves, and
// the parsing of the filters people type (label key=value lists, vendor:device types).
import { describe, expect, it } from 'vitest';
import { CAPACITY_CSV_FILENAME, capacityCsv } from '../app/capacity/csv';
import { parseLabels, parseType, queryString } from '../app/devices/filters';

const row = {
  vendorId: '15b3',
  deviceId: '101e',
  vendorName: 'Mellanox Technologies',
  deviceName: 'ConnectX Family mlx5Gen Virtual Function',
  className: 'Ethernet controller',
  hosts: 3,
  total: 6,
  bound: 1,
  ready: 4,
  blocked: 1,
  inUse: 2,
  vfHeadroom: 0,
};

describe('capacityCsv', () => {
  it('writes the documented header and one row per type, CRLF-terminated', () => {
    expect(CAPACITY_CSV_FILENAME).toBe('vfio-fleet-capacity.csv');
    const csv = capacityCsv([row]);
    expect(csv.split('\r\n')).toEqual([
      'vendor_id,device_id,vendor,device,total,bound,ready,blocked,in_use,vf_headroom,hosts,class',
      '15b3,101e,Mellanox Technologies,ConnectX Family mlx5Gen Virtual Function,6,1,4,1,2,0,3,Ethernet controller',
      '',
    ]);
  });

  it('quotes commas, quotes and newlines, leaves missing names empty, and defuses formulas', () => {
    const csv = capacityCsv([
      {
        ...row,
        vendorName: null,
        deviceName: 'Card, "rev 2"\nB',
        className: '=HYPERLINK("http://x")',
      },
    ]);
    const line = csv.split('\r\n')[1];
    expect(line).toBe(`15b3,101e,,"Card, ""rev 2""\nB",6,1,4,1,2,0,3,"'=HYPERLINK(""http://x"")"`);
    expect(capacityCsv([])).toBe(
      'vendor_id,device_id,vendor,device,total,bound,ready,blocked,in_use,vf_headroom,hosts,class\r\n',
    );
  });

  // Each character a spreadsheet reads as the start of a formula (= + - @), or that some strip
  // before reading one (tab, CR), in every cell an agent's pci.ids can fill.
  it.each([
    ['=', "'=cmd|' /C calc'!A0"],
    ['+', "'+cmd|' /C calc'!A0"],
    ['-', "'-cmd|' /C calc'!A0"],
    ['@', "'@cmd|' /C calc'!A0"],
    ['\t', "'\tcmd|' /C calc'!A0"],
    ['\r', `"'\rcmd|' /C calc'!A0"`],
  ])('defuses a cell starting with %j', (lead, cell) => {
    const value = `${lead}cmd|' /C calc'!A0`;
    const csv = capacityCsv([{ ...row, vendorName: value, deviceName: value, className: value }]);
    expect(csv.split('\r\n')[1]).toBe(`15b3,101e,${cell},${cell},6,1,4,1,2,0,3,${cell}`);
  });
});

describe('filter parsing', () => {
  it('parseLabels takes comma-separated key=value pairs and names the bad one', () => {
    expect(parseLabels('')).toEqual({ labels: {} });
    expect(parseLabels(' rack = r1 , role=gpu,')).toEqual({ labels: { rack: 'r1', role: 'gpu' } });
    expect(parseLabels('rack=')).toEqual({ labels: { rack: '' } });
    expect(parseLabels('rack')).toEqual({ error: '"rack" is not key=value' });
    expect(parseLabels('=r1')).toEqual({ error: '"=r1" is not key=value' });
  });

  it('parseType takes vendor:device or a vendor alone, case-insensitively', () => {
    expect(parseType('')).toEqual({});
    expect(parseType('15B3:101E')).toEqual({ vendorId: '15b3', deviceId: '101e' });
    expect(parseType('15b3')).toEqual({ vendorId: '15b3' });
    expect(parseType('15b3:')).toEqual({ vendorId: '15b3' });
    expect('error' in parseType('15b3:10')).toBe(true);
    expect('error' in parseType('nvidia')).toBe(true);
  });

  it('queryString drops empty values', () => {
    expect(queryString({})).toBe('');
    expect(queryString({ status: 'blocked', q: ' ', host: undefined })).toBe('?status=blocked');
    expect(queryString({ label: 'rack=r1, role=gpu' })).toBe('?label=rack%3Dr1%2C+role%3Dgpu');
  });
});
