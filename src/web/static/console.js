// Usher console: new audit events appear in the Activity table without a reload
// (server-sent events from /console/events/stream). Nothing else is scripted.
(function () {
  var table = document.getElementById('events');
  if (!table || !table.dataset.live || !window.EventSource) return;
  var body = table.tBodies[0];
  var status = document.getElementById('live-status');
  var withIntegration = table.tHead.rows[0].cells.length > 4;
  var url = '/console/events/stream?after=' + encodeURIComponent(table.dataset.newest || '0');
  if (table.dataset.integration) url += '&integration=' + encodeURIComponent(table.dataset.integration);
  var source = new EventSource(url);
  function cell(row, text) { var td = row.insertCell(-1); td.textContent = text || ''; return td; }
  source.addEventListener('audit', function (msg) {
    var e = JSON.parse(msg.data);
    var empty = body.querySelector('tr.empty');
    if (empty) empty.remove();
    var row = body.insertRow(0);
    row.dataset.seq = e.seq;
    row.className = 'new';
    var t = document.createElement('time'); t.dateTime = e.at; t.textContent = e.at;
    row.insertCell(-1).appendChild(t);
    cell(row, e.actor);
    var a = document.createElement('a'); a.href = '/console/events/' + e.seq; a.textContent = e.event_type;
    row.insertCell(-1).appendChild(a);
    cell(row, e.target);
    if (withIntegration) cell(row, e.integration_id);
    if (status) status.textContent = 'New event: ' + e.event_type;
  });
  source.onerror = function () { if (status) status.textContent = 'Live updates paused; they resume by themselves.'; };
})();
